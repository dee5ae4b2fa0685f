// The subcommands of discrete flow matching on token sequences: discrete train, sample, elbo.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace flowmatch_cli {

/// Adds the subcommand `discrete` with its subcommands train, sample and elbo to @p app; the
/// returned function runs the one the command line chose (and nothing if it chose another).
std::function<void()> add_discrete_commands(CLI::App& app);

}  // namespace flowmatch_cli
