/* SPDX-License-Identifier: MIT */
/* The C API tests' one check: on failure, print the line, the message and
   the library's last error, count it, and go on; main returns non-zero
   when `failures` is. */
#ifndef VMSNAP_TESTS_EMBED_EXPECT_H
#define VMSNAP_TESTS_EMBED_EXPECT_H

#include <stdio.h>

#include <vmsnap/vmsnap.h>

static int failures;

#define EXPECT(cond, ...)                                          \
  do {                                                             \
    if (!(cond)) {                                                 \
      fprintf(stderr, "FAIL line %d: ", __LINE__);                 \
      fprintf(stderr, __VA_ARGS__);                                \
      fprintf(stderr, " (last error: %s)\n", vmsnap_last_error()); \
      ++failures;                                                  \
    }                                                              \
  } while (0)

#endif
