// The test programs' shared main. The tests check correctness only: no Catch2 benchmarks.
// Every test case is tagged with the name of its file ([#test_solver] for test_solver.cpp), so
// that a program built from several files lists and runs each file's cases on their own.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

int main(int argc, char* argv[]) {
  Catch::Session session;
  session.configData().filenamesAsTags = true;
  const int parse_status = session.applyCommandLine(argc, argv);
  if (parse_status != 0) return parse_status;
  return session.run();
}
