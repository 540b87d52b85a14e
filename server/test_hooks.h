/*
 * Hooks that only the test build of the server library carries
 * (//server:server_lib_test_hooks, compiled with ES_TEST_HOOKS). A race
 * between two threads of the server is hard to hit from outside; these let a
 * test hold one thread at the racy point while it drives the other, so that
 * the interleaving happens every run instead of once in a million. The
 * production library (//server:server_lib) compiles none of this.
 *
 * A hook is a plain function pointer, NULL (off) by default; the test sets it
 * before it starts the server and clears it after the server stopped. Hooks
 * run on server threads and must be thread-safe.
 */
#ifndef ES_SERVER_TEST_HOOKS_H
#define ES_SERVER_TEST_HOOKS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Runs in call_park right after es_notifier_wait registered the call's waiter,
 * on the parking thread, with the method path ("eventstore.v1.EventStore/
 * Subscribe"). From that moment another thread may fire the waiter and finish
 * the call; blocking here widens that window. */
extern void (*es__test_hook_parked)(const char *method);

/* Runs when a call that arrived is freed (its last reference released), with
 * its method path. */
extern void (*es__test_hook_call_freed)(const char *method);

#ifdef __cplusplus
}
#endif

#endif
