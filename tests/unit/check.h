/* check.h - the tiny assertion kit of the C unit tests.
 * CHECK(cond) records a failure with file:line and keeps going; the test's main()
 * returns check_report(), which prints "N passed, M failed" and gives 0 or 1. */
#ifndef FR_CHECK_H
#define FR_CHECK_H

#include <math.h>
#include <stdio.h>

static int check_pass_count, check_fail_count;

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (cond) check_pass_count++;                                                   \
        else {                                                                          \
            check_fail_count++;                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);    \
        }                                                                               \
    } while (0)

#define CHECK_MSG(cond, ...)                                                            \
    do {                                                                                \
        if (cond) check_pass_count++;                                                   \
        else {                                                                          \
            check_fail_count++;                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                               \
            fputc('\n', stderr);                                                        \
        }                                                                               \
    } while (0)

#define CHECK_NEAR(a, b, tol) CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%g vs %g", (double)(a), (double)(b))

static inline int check_report(const char *name) {
    printf("%s: %d passed, %d failed\n", name, check_pass_count, check_fail_count);
    return check_fail_count ? 1 : 0;
}

#endif
