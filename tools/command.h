// SPDX-License-Identifier: MIT
// The subcommand table: each tools/<name>.cc defines one Register function;
// main.cc lists them all in one table.
#pragma once

#include <CLI/CLI.hpp>

#include "tools/exit_status.h"

namespace vmsnap::cli {

// Adds the subcommand to `app`. When the subcommand runs, its callback stores
// the process exit status in *exit_code.
using RegisterFn = void (*)(CLI::App& app, int* exit_code);

void RegisterRun(CLI::App& app, int* exit_code);
void RegisterLoad(CLI::App& app, int* exit_code);
void RegisterSave(CLI::App& app, int* exit_code);
void RegisterInspect(CLI::App& app, int* exit_code);
void RegisterDiff(CLI::App& app, int* exit_code);
void RegisterVerify(CLI::App& app, int* exit_code);
void RegisterFlatten(CLI::App& app, int* exit_code);
void RegisterExport(CLI::App& app, int* exit_code);
void RegisterRead(CLI::App& app, int* exit_code);
void RegisterTranslate(CLI::App& app, int* exit_code);
void RegisterImport(CLI::App& app, int* exit_code);
void RegisterServe(CLI::App& app, int* exit_code);
#ifdef VMSNAP_HAVE_STORE
void RegisterPush(CLI::App& app, int* exit_code);
void RegisterPull(CLI::App& app, int* exit_code);
void RegisterLs(CLI::App& app, int* exit_code);
void RegisterGc(CLI::App& app, int* exit_code);
#endif

}  // namespace vmsnap::cli
