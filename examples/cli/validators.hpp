// The checks of numeric options shared by the subcommands.
#pragma once

#include <CLI/CLI.hpp>

#include <exception>
#include <string>

namespace flowmatch_cli {

/// Accepts a number > 0, or >= 0 with @p allow_zero. (CLI11's PositiveNumber would print the
/// whole range of double in its message.)
inline CLI::Validator number_check(bool allow_zero) {
  const std::string expected = allow_zero ? "a number >= 0" : "a number > 0";
  return {[allow_zero, expected](std::string& input) -> std::string {
            std::size_t used = 0;
            double value = 0;
            try {
              value = std::stod(input, &used);
            } catch (const std::exception&) {
              used = 0;
            }
            const bool accepted =
                used > 0 && used == input.size() && (allow_zero ? value >= 0 : value > 0);
            return accepted ? std::string() : "expected " + expected + ", got " + input;
          },
          expected};
}
inline const CLI::Validator positive = number_check(false);
inline const CLI::Validator non_negative = number_check(true);

}  // namespace flowmatch_cli
