/* SPDX-License-Identifier: MIT */
/* Compiled with -std=c99 -Wall -Werror by the embed tests: the public header
 * stands alone, needs no generated or C++ header, and is valid C99. */
#include <vmsnap/vmsnap.h>

int main(void) {
  uint16_t major = 0, minor = 0;
  vmsnap_format_version(&major, &minor);
  return vmsnap_version()[0] != '\0' && major >= 1 ? 0 : 1;
}
