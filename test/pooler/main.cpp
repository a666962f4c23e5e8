// Catch2 entry point for the unit tests of pooler/ logic that needs no sockets.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
