// SPDX-License-Identifier: MIT
// Fuzz entry points for the small parsers of untrusted text: the control
// socket's request lines and the CLI's sizes and addresses. Shared by the
// libFuzzer targets and the corpus replay test.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vmsnap::fuzz {

// Parses `data` as one control request line. Checks what the VMM relies on:
// no exception escapes, a save request always has a non-empty path without
// NUL bytes. Returns 0; anything else is a crash.
int ControlRequestOneInput(const uint8_t* data, size_t size);

// Parses `data` as an address, a length with suffix and a memory size.
// Checks: an accepted value prints back (decimal and hex) to text that parses
// to the same value; a memory size is in (0, 1 TiB]. Returns 0.
int CliNumberOneInput(const uint8_t* data, size_t size);

}  // namespace vmsnap::fuzz
