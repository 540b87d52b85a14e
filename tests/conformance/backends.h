// The backends the conformance suite runs against, in one list.
//
// A factory opens a fresh, empty store per test and closes it afterwards.
// Adding a backend means adding one entry to ConformanceBackends() in
// backends.cc (and its library to the "backends" target); every test of
// conformance_test.cc then runs against it as well. A factory whose backend
// needs an external service (PostgreSQL) starts or reaches that service from
// its open function and reports ES_EUNAVAIL when it cannot.
#ifndef ES_TESTS_CONFORMANCE_BACKENDS_H
#define ES_TESTS_CONFORMANCE_BACKENDS_H

#include <ostream>
#include <vector>

#include "es/backend.h"
#include "es/error.h"

struct BackendFactory {
  const char *name;                                // test-name suffix: letters, digits, _
  int (*open)(es_backend_t **out, es_err_t *err);  // a fresh, empty store
  void (*close)(es_backend_t *b);                  // closes it and discards its data
};

// Every backend under test, in a fixed order.
const std::vector<BackendFactory> &ConformanceBackends();

// For GoogleTest's messages.
inline void PrintTo(const BackendFactory &f, std::ostream *os) {
  *os << f.name;
}

#endif  // ES_TESTS_CONFORMANCE_BACKENDS_H
