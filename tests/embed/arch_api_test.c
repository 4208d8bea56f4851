/* SPDX-License-Identifier: MIT */
/* The C API's state calls for s390x, ppc64 and aarch64, without a guest:
 * a snapshot written from the kernel's structs with distinctive values
 * passes `vmsnap verify` and `vmsnap inspect`, and every piece reads back
 * byte for byte; a missing piece is named at commit and leaves no file; the
 * golden files of those architectures read back as `inspect --json` shows
 * them (printed here as "KEY VALUE" lines for arch_api_test.sh to compare).
 *   arch_api_test VMSNAP_BINARY GOLDEN_DIR WORK_DIR
 * The structs are spelled out here: this host's <linux/kvm.h> is x86's. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vmsnap/vmsnap.h>

#include "expect.h"

static const char *vmsnap_bin, *golden_dir, *work_dir;


/* ---- Kernel layouts of the other architectures. */
struct s390_regs { uint64_t gprs[16]; };
struct s390_sregs { uint32_t acrs[16]; uint64_t crs[16]; };
struct s390_fpu { uint32_t fpc; uint64_t fprs[16]; };
struct s390_tod { uint8_t epoch_idx; uint64_t tod; };
struct mp_state { uint32_t mp_state; };
struct ppc_regs { uint64_t r[49]; }; /* pc cr ctr lr xer msr srr0 srr1 pid sprg0-7 gpr0-31 */
struct ppc_sregs {
  uint32_t pvr;
  union {
    struct {
      uint64_t sdr1;
      struct { uint64_t slbe, slbv; } slb[64];
    } s;
    uint8_t raw[1224];
  } u;
};
struct arm_init { uint32_t target; uint32_t features[7]; };
struct arm_events {
  uint8_t serror_pending, serror_has_esr, ext_dabt_pending, pad[5];
  uint64_t serror_esr;
  uint32_t reserved[12];
};
struct arm_counter { uint64_t counter_offset, reserved; };

/* A VMSNAP_ONE_REGS buffer being built. */
struct one_regs {
  unsigned char b[16384];
  size_t n;
};
static void put_reg(struct one_regs *r, uint64_t id, uint64_t seed) {
  size_t size = (size_t)1 << ((id >> 52) & 0xf), i;
  memcpy(r->b + r->n, &id, 8);
  for (i = 0; i < size; ++i) r->b[r->n + 8 + i] = (unsigned char)(seed >> (8 * (i % 8))) + (unsigned char)(i / 8);
  r->n += 8 + size;
}

/* Reads piece WHAT of vCPU VCPU (or the VM, vcpu < 0) and compares it with
 * WANT byte for byte. */
static void expect_state(vmsnap_snapshot *s, int vcpu, vmsnap_state what, const void *want, size_t size,
                         const char *name) {
  static unsigned char got[1 << 20];
  size_t n = 0;
  int rc = vcpu < 0 ? vmsnap_vm_state(s, what, got, sizeof got, &n)
                    : vmsnap_vcpu_state(s, (uint32_t)vcpu, what, got, sizeof got, &n);
  EXPECT(rc == VMSNAP_OK, "%s (vCPU %d): %s", name, vcpu, vmsnap_status_name(rc));
  EXPECT(rc != VMSNAP_OK || n == size, "%s (vCPU %d): %zu bytes back, %zu written", name, vcpu, n, size);
  if (rc == VMSNAP_OK && n == size && memcmp(got, want, size) != 0) {
    size_t i = 0;
    while (got[i] == ((const unsigned char *)want)[i]) ++i;
    EXPECT(0, "%s (vCPU %d): differs at byte %zu", name, vcpu, i);
  }
}

/* Runs `vmsnap CMD PATH`; on failure shows what it printed. */
static int run_tool(const char *cmd, const char *path) {
  char line[4096];
  int rc;
  snprintf(line, sizeof line, "%s %s %s >%s.out 2>&1", vmsnap_bin, cmd, path, path);
  rc = system(line);
  if (rc != 0) {
    fprintf(stderr, "`%s %s %s` exited with status %d:\n", vmsnap_bin, cmd, path, rc);
    snprintf(line, sizeof line, "cat %s.out >&2", path);
    if (system(line) != 0) fprintf(stderr, "(no output)\n");
  }
  return rc;
}

/* Guest memory handed to writers: the writer may read it until commit. */
static void *memory[4];
static unsigned memory_used;

static void add_memory(vmsnap_writer *w, uint64_t gpa, uint64_t size, uint32_t slot) {
  unsigned char *m = calloc(1, size);
  vmsnap_region r;
  memory[memory_used++] = m;
  memset(&r, 0, sizeof r);
  snprintf((char *)m, 64, "memory of slot %u", slot);
  r.slot = slot;
  r.guest_phys_addr = gpa;
  r.size = size;
  r.host = m;
  r.name = "ram";
  EXPECT(vmsnap_writer_add_region(w, &r) == VMSNAP_OK, "add region %u", slot);
}

/* Commits W and checks the file with the tool. */
static void commit_and_check(vmsnap_writer *w, const char *path) {
  EXPECT(vmsnap_writer_commit(w) == VMSNAP_OK, "commit %s", path);
  vmsnap_writer_free(w);
  while (memory_used > 0) free(memory[--memory_used]);
  EXPECT(run_tool("verify", path) == 0, "vmsnap verify %s", path);
  EXPECT(run_tool("inspect", path) == 0, "vmsnap inspect %s", path);
  EXPECT(run_tool("inspect --json", path) == 0, "vmsnap inspect --json %s", path);
}

/* ---- s390x: 2 vCPUs, storage keys and CMMA over two regions. */
#define S390_PAGES 12
static void test_s390(void) {
  char path[512];
  struct s390_regs regs[2];
  struct s390_sregs sregs[2];
  struct s390_fpu fpu[2];
  struct mp_state mp[2] = {{7}, {5}};
  vmsnap_s390_run_regs run[2];
  struct one_regs one[2];
  struct s390_tod tod;
  unsigned char skeys[S390_PAGES], cmma[S390_PAGES];
  vmsnap_writer *w = NULL;
  vmsnap_snapshot *s = NULL;
  vmsnap_arch arch;
  int v, i;
  snprintf(path, sizeof path, "%s/s390x.vmsnap", work_dir);
  EXPECT(vmsnap_writer_create(path, VMSNAP_ARCH_S390X, NULL, &w) == VMSNAP_OK, "create s390x");
  if (!w) return;
  for (v = 0; v < 2; ++v) {
    memset(&regs[v], 0, sizeof regs[v]);
    memset(&sregs[v], 0, sizeof sregs[v]);
    memset(&fpu[v], 0, sizeof fpu[v]);
    memset(&run[v], 0, sizeof run[v]);
    for (i = 0; i < 16; ++i) {
      regs[v].gprs[i] = 0x5390000000000000ull | (uint64_t)v << 8 | (uint64_t)i;
      sregs[v].acrs[i] = 0xac000000u | (uint32_t)(v << 8) | (uint32_t)i;
      sregs[v].crs[i] = 0xc500000000000000ull | (uint64_t)v << 8 | (uint64_t)i;
      fpu[v].fprs[i] = 0x3ff0000000000000ull + (uint64_t)(v * 16 + i);
    }
    fpu[v].fpc = 0x00080000u + (uint32_t)v;
    run[v].psw_mask = 0x0706000180000000ull;
    run[v].psw_addr = 0x10000ull + 0x100ull * (uint64_t)v;
    run[v].prefix = 0x2000u * (uint32_t)(v + 1);
    one[v].n = 0;  /* the order a restore sets them */
    put_reg(&one[v], 0x5030000000000003ull, 0x7100000000000000ull + (uint64_t)v); /* CPU_TIMER */
    put_reg(&one[v], 0x5030000000000004ull, 0x7200000000000000ull + (uint64_t)v); /* CLOCK_COMP */
    put_reg(&one[v], 0x5020000000000001ull, 0x73000000ull + (uint64_t)v);         /* TODPR */
    put_reg(&one[v], 0x5030000000000008ull, 0x7400000000000000ull + (uint64_t)v); /* PP */
    put_reg(&one[v], 0x5030000000000009ull, 0x7500000000000000ull + (uint64_t)v); /* GBEA */
    EXPECT(vmsnap_writer_set_vcpu_state(w, (uint32_t)v, VMSNAP_S390_REGS, &regs[v], sizeof regs[v]) == 0, "REGS");
    EXPECT(vmsnap_writer_set_vcpu_state(w, (uint32_t)v, VMSNAP_S390_SREGS, &sregs[v], sizeof sregs[v]) == 0, "SREGS");
    EXPECT(vmsnap_writer_set_vcpu_state(w, (uint32_t)v, VMSNAP_S390_FPU, &fpu[v], sizeof fpu[v]) == 0, "FPU");
    EXPECT(vmsnap_writer_set_vcpu_state(w, (uint32_t)v, VMSNAP_S390_MP_STATE, &mp[v], sizeof mp[v]) == 0, "MP");
    EXPECT(vmsnap_writer_set_vcpu_state(w, (uint32_t)v, VMSNAP_S390_RUN_REGS, &run[v], sizeof run[v]) == 0, "RUN");
    EXPECT(vmsnap_writer_set_vcpu_state(w, (uint32_t)v, VMSNAP_ONE_REGS, one[v].b, one[v].n) == 0, "ONE_REGS");
  }
  /* A wrong size is refused at once, naming the piece. */
  EXPECT(vmsnap_writer_set_vcpu_state(w, 0, VMSNAP_S390_FPU, &fpu[0], 8) == VMSNAP_E_INVALID_ARGUMENT &&
             strstr(vmsnap_last_error(), "VMSNAP_S390_FPU") != NULL,
         "short FPU refused");
  memset(&tod, 0, sizeof tod);
  tod.epoch_idx = 3;
  tod.tod = 0xd1c2b3a4f5e60718ull;
  for (i = 0; i < S390_PAGES; ++i) {
    skeys[i] = (unsigned char)((i % 16) << 4 | (i & 1 ? 6 : 0));
    cmma[i] = (unsigned char)((i % 4) | (i % 3 == 0 ? 0x40 : 0));
  }
  EXPECT(vmsnap_writer_set_vm_state(w, VMSNAP_S390_TOD, &tod, sizeof tod) == 0, "TOD");
  EXPECT(vmsnap_writer_set_vm_state(w, VMSNAP_S390_SKEYS, skeys, sizeof skeys) == 0, "SKEYS");
  EXPECT(vmsnap_writer_set_vm_state(w, VMSNAP_S390_CMMA, cmma, sizeof cmma) == 0, "CMMA");
  add_memory(w, 0, 8 * 4096, 0);
  add_memory(w, 0x100000, 4 * 4096, 1);
  commit_and_check(w, path);

  EXPECT(vmsnap_open(path, 0, &s) == VMSNAP_OK, "open %s", path);
  if (!s) return;
  EXPECT(vmsnap_arch_of(s, &arch) == VMSNAP_OK && arch == VMSNAP_ARCH_S390X, "arch s390x");
  for (v = 0; v < 2; ++v) {
    expect_state(s, v, VMSNAP_S390_REGS, &regs[v], sizeof regs[v], "s390x REGS");
    expect_state(s, v, VMSNAP_S390_SREGS, &sregs[v], sizeof sregs[v], "s390x SREGS");
    expect_state(s, v, VMSNAP_S390_FPU, &fpu[v], sizeof fpu[v], "s390x FPU");
    expect_state(s, v, VMSNAP_S390_MP_STATE, &mp[v], sizeof mp[v], "s390x MP_STATE");
    expect_state(s, v, VMSNAP_S390_RUN_REGS, &run[v], sizeof run[v], "s390x RUN_REGS");
    expect_state(s, v, VMSNAP_ONE_REGS, one[v].b, one[v].n, "s390x ONE_REGS");
  }
  expect_state(s, -1, VMSNAP_S390_TOD, &tod, sizeof tod, "s390x TOD");
  expect_state(s, -1, VMSNAP_S390_SKEYS, skeys, sizeof skeys, "s390x SKEYS");
  expect_state(s, -1, VMSNAP_S390_CMMA, cmma, sizeof cmma, "s390x CMMA");
  /* Another architecture's piece is refused, not misread. */
  EXPECT(vmsnap_vcpu_state(s, 0, VMSNAP_PPC64_REGS, regs, sizeof regs, NULL) == VMSNAP_E_INVALID_ARGUMENT,
         "ppc64 REGS of an s390x snapshot");
  vmsnap_close(s);

  /* A missing piece is named at commit, and no file appears. */
  snprintf(path, sizeof path, "%s/s390x-missing.vmsnap", work_dir);
  w = NULL;
  EXPECT(vmsnap_writer_create(path, VMSNAP_ARCH_S390X, NULL, &w) == VMSNAP_OK, "create");
  if (!w) return;
  vmsnap_writer_set_vcpu_state(w, 0, VMSNAP_S390_REGS, &regs[0], sizeof regs[0]);
  vmsnap_writer_set_vm_state(w, VMSNAP_S390_TOD, &tod, sizeof tod);
  EXPECT(vmsnap_writer_commit(w) == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "vCPU 0") &&
             strstr(vmsnap_last_error(), "VMSNAP_S390_"),
         "commit without SREGS/FPU/... names the piece");
  vmsnap_writer_free(w);
  EXPECT(access(path, F_OK) != 0, "%s exists after a failed commit", path);
}

/* ---- ppc64: 1 vCPU, a hashed page table of 2^18 bytes. */
static void put_hpte(unsigned char *p, uint64_t v, uint64_t r) {
  int i;
  for (i = 0; i < 8; ++i) {
    p[i] = (unsigned char)(v >> (56 - 8 * i));
    p[8 + i] = (unsigned char)(r >> (56 - 8 * i));
  }
}
static size_t put_htab_header(unsigned char *p, uint32_t index, uint16_t n_valid, uint16_t n_invalid) {
  memcpy(p, &index, 4);
  memcpy(p + 4, &n_valid, 2);
  memcpy(p + 6, &n_invalid, 2);
  return 8;
}

static void test_ppc64(void) {
  char path[512];
  struct ppc_regs regs;
  struct ppc_sregs sregs;
  struct one_regs one;
  unsigned char htab[256];
  size_t hn = 0;
  vmsnap_writer *w = NULL;
  vmsnap_snapshot *s = NULL;
  uint32_t page = 0;
  int i;
  const uint64_t ppc = 0x1000000000000000ull, u32 = 0x0020000000000000ull, u64 = 0x0030000000000000ull,
                 u128 = 0x0040000000000000ull;
  snprintf(path, sizeof path, "%s/ppc64.vmsnap", work_dir);
  EXPECT(vmsnap_writer_create(path, VMSNAP_ARCH_PPC64, NULL, &w) == VMSNAP_OK, "create ppc64");
  if (!w) return;
  for (i = 0; i < 49; ++i) regs.r[i] = 0x9964000000000000ull | (uint64_t)i << 16 | 0xbeef;
  memset(&sregs, 0, sizeof sregs);
  sregs.pvr = 0x004e1202;
  sregs.u.s.sdr1 = 0;
  for (i = 0; i < 3; ++i) { /* valid entries first, as a restore loads them */
    sregs.u.s.slb[i].slbe = 0x08000000ull | (uint64_t)i << 28 | (uint64_t)i;
    sregs.u.s.slb[i].slbv = 0x0000400000000400ull + ((uint64_t)i << 12);
  }
  one.n = 0; /* the order a restore sets them: FPRs, VRs, VSRs, then the SPRs */
  put_reg(&one, ppc | u64 | 0x20, 0x400921fb54442d18ull);     /* FPR0 */
  put_reg(&one, ppc | u64 | 0x21, 0xc000000000000000ull);     /* FPR1 */
  put_reg(&one, ppc | u128 | 0x40, 0x0102030405060708ull);    /* VR0 */
  put_reg(&one, ppc | u128 | 0x61, 0x1112131415161718ull);    /* VSR1 */
  put_reg(&one, ppc | u64 | 0x9, 0xd5c0000000000001ull);      /* DSCR */
  put_reg(&one, ppc | u32 | 0xd, 0x42000000ull);              /* DSISR */
  put_reg(&one, ppc | u128 | 0x83, 0x5100000000000abcull);    /* VPA_SLB */
  put_reg(&one, ppc | u64 | 0x9c, 0xfffffff000000000ull);     /* TB_OFFSET */
  put_reg(&one, ppc | u32 | 0xb7, 0x0f000005ull);             /* ARCH_COMPAT */
  /* Valid HPTEs at 5, 6 and 100 of 16384, as the kernel's first pass lays them out. */
  hn += put_htab_header(htab + hn, 0, 0, 5);
  hn += put_htab_header(htab + hn, 5, 2, 93);
  put_hpte(htab + hn, 0x4000000000000011ull, 0x0000000001000192ull);
  put_hpte(htab + hn + 16, 0x4000000000000081ull, 0x0000000002000193ull);
  hn += 32;
  hn += put_htab_header(htab + hn, 100, 1, 16384 - 101);
  put_hpte(htab + hn, 0x4000000000001c05ull, 0x00000000030001f3ull);
  hn += 16;
  EXPECT(vmsnap_writer_set_vcpu_state(w, 0, VMSNAP_PPC64_REGS, &regs, sizeof regs) == 0, "REGS");
  EXPECT(vmsnap_writer_set_vcpu_state(w, 0, VMSNAP_PPC64_SREGS, &sregs, sizeof sregs) == 0, "SREGS");
  EXPECT(vmsnap_writer_set_vcpu_state(w, 0, VMSNAP_ONE_REGS, one.b, one.n) == 0, "ONE_REGS");
  EXPECT(vmsnap_writer_set_vm_state(w, VMSNAP_PPC64_HTAB, htab, hn) == 0, "HTAB");
  /* A stream that runs past its end is refused at once. */
  EXPECT(vmsnap_writer_set_vm_state(w, VMSNAP_PPC64_HTAB, htab, 20) == VMSNAP_E_INVALID_ARGUMENT &&
             strstr(vmsnap_last_error(), "VMSNAP_PPC64_HTAB") != NULL,
         "cut HTAB refused");
  add_memory(w, 0, 2 * 65536, 0);
  commit_and_check(w, path);

  EXPECT(vmsnap_open(path, 0, &s) == VMSNAP_OK, "open %s", path);
  if (!s) return;
  EXPECT(vmsnap_page_size(s, &page) == VMSNAP_OK && page == 65536, "ppc64 page size %u", page);
  expect_state(s, 0, VMSNAP_PPC64_REGS, &regs, sizeof regs, "ppc64 REGS");
  expect_state(s, 0, VMSNAP_PPC64_SREGS, &sregs, sizeof sregs, "ppc64 SREGS");
  expect_state(s, 0, VMSNAP_ONE_REGS, one.b, one.n, "ppc64 ONE_REGS");
  expect_state(s, -1, VMSNAP_PPC64_HTAB, htab, hn, "ppc64 HTAB");
  vmsnap_close(s);

  /* A register the ppc64 capture does not store is refused at commit. */
  snprintf(path, sizeof path, "%s/ppc64-bad.vmsnap", work_dir);
  w = NULL;
  EXPECT(vmsnap_writer_create(path, VMSNAP_ARCH_PPC64, NULL, &w) == VMSNAP_OK, "create");
  if (!w) return;
  one.n = 0;
  put_reg(&one, ppc | u64 | 0x7ff, 1);
  vmsnap_writer_set_vcpu_state(w, 0, VMSNAP_PPC64_REGS, &regs, sizeof regs);
  vmsnap_writer_set_vcpu_state(w, 0, VMSNAP_PPC64_SREGS, &sregs, sizeof sregs);
  vmsnap_writer_set_vcpu_state(w, 0, VMSNAP_ONE_REGS, one.b, one.n);
  vmsnap_writer_set_vm_state(w, VMSNAP_PPC64_HTAB, htab, hn);
  EXPECT(vmsnap_writer_commit(w) == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "0x10300000000007ff"),
         "an unknown ppc64 register is named");
  vmsnap_writer_free(w);
  EXPECT(access(path, F_OK) != 0, "%s exists after a failed commit", path);
}

/* ---- aarch64: 1 vCPU with a vGICv3 and an ITS. */
struct attrs {
  vmsnap_device_attr a[128];
  size_t n;
};
static void put_attr(struct attrs *l, uint32_t group, uint64_t attr, uint64_t value) {
  l->a[l->n].flags = 0;
  l->a[l->n].group = group;
  l->a[l->n].attr = attr;
  l->a[l->n].value = value;
  ++l->n;
}
static uint64_t sysreg(unsigned op0, unsigned op1, unsigned crn, unsigned crm, unsigned op2) {
  return 0x6030000000130000ull | (uint64_t)op0 << 14 | (uint64_t)op1 << 11 | (uint64_t)crn << 7 | (uint64_t)crm << 3 |
         op2;
}

static void test_aarch64(void) {
  static const uint32_t redist[] = {0x70,    0x74,    0x78,    0x7c,    0x0,     0x10080, 0x10100,
                                    0x10200, 0x10300, 0x10c00, 0x10c04, 0x10d00};
  char path[512];
  struct arm_init init;
  struct mp_state mp = {0};
  struct arm_events ev;
  struct arm_counter counter = {0x123456789aull, 0};
  struct one_regs one;
  struct attrs gic, its;
  vmsnap_writer *w = NULL;
  vmsnap_snapshot *s = NULL;
  const uint64_t core64 = 0x6030000000100000ull, core128 = 0x6040000000100000ull,
                 core32 = 0x6020000000100000ull;
  unsigned i;
  snprintf(path, sizeof path, "%s/aarch64.vmsnap", work_dir);
  EXPECT(vmsnap_writer_create(path, VMSNAP_ARCH_AARCH64, NULL, &w) == VMSNAP_OK, "create aarch64");
  if (!w) return;
  memset(&init, 0, sizeof init);
  init.target = 5;
  init.features[0] = 1u << 2 | 1u << 3; /* PSCI_0_2, PMU_V3 */
  memset(&ev, 0, sizeof ev);
  ev.serror_pending = 1;
  ev.serror_has_esr = 1;
  ev.serror_esr = 0x21;
  one.n = 0; /* the order a restore sets them */
  for (i = 0; i < 31; ++i) put_reg(&one, core64 | (2 * i), 0xa640000000000000ull | i);
  put_reg(&one, core64 | 62, 0xffff80000a00f000ull);  /* SP_EL0 */
  put_reg(&one, core64 | 64, 0xffff800008010000ull);  /* PC */
  put_reg(&one, core64 | 66, 0x3c5);                  /* PSTATE */
  put_reg(&one, core64 | 68, 0xffff80000a010000ull);  /* SP_EL1 */
  put_reg(&one, core64 | 70, 0xffff800008020000ull);  /* ELR_EL1 */
  for (i = 0; i < 5; ++i) put_reg(&one, core64 | (72 + 2 * i), 0x3c0 + i); /* SPSR */
  for (i = 0; i < 32; ++i) put_reg(&one, core128 | (84 + 4 * i), 0x0706050403020100ull + i);
  put_reg(&one, core32 | 212, 0x08000010);             /* FPSR */
  put_reg(&one, core32 | 213, 0x03000000);             /* FPCR */
  put_reg(&one, sysreg(3, 0, 0, 0, 5), 0x80000000ull); /* MPIDR_EL1 */
  put_reg(&one, sysreg(3, 0, 1, 0, 0), 0x30d0599dull); /* SCTLR_EL1 */
  put_reg(&one, sysreg(3, 0, 2, 0, 2), 0x34b5193519ull); /* TCR_EL1 */
  put_reg(&one, 0x6030000000140000ull, 0x10001);       /* KVM_REG_ARM_FW PSCI version */
  put_reg(&one, 0x6020000000110000ull, 0x700fe01a);    /* CCSIDR demux */
  put_reg(&one, sysreg(3, 3, 14, 3, 2), 0x5a5a5a5aull); /* TIMER_CNT */
  put_reg(&one, sysreg(3, 3, 14, 0, 2), 0x6b6b6b6bull); /* TIMER_CVAL */
  put_reg(&one, sysreg(3, 3, 14, 3, 1), 0x1);          /* TIMER_CTL */

  /* The vGIC with 32 interrupts (no SPIs): every register the capture reads. */
  gic.n = 0;
  put_attr(&gic, 0, 2, 0x08000000);  /* ADDR DIST */
  put_attr(&gic, 0, 3, 0x080a0000);  /* ADDR REDIST */
  put_attr(&gic, 3, 0, 32);          /* NR_IRQS */
  put_attr(&gic, 1, 0x0, 0x80000052);  /* GICD_CTLR */
  for (i = 0; i < sizeof redist / sizeof redist[0]; ++i) put_attr(&gic, 5, redist[i], 0x11110000u + i);
  for (i = 0; i < 8; ++i) put_attr(&gic, 5, 0x10400 + 4 * i, 0xa0a0a0a0u + i);
  put_attr(&gic, 6, sysreg(3, 0, 12, 12, 5) & 0xffff, 0x7);   /* ICC_SRE */
  put_attr(&gic, 6, sysreg(3, 0, 12, 12, 4) & 0xffff, 0x400); /* ICC_CTLR */
  put_attr(&gic, 6, sysreg(3, 0, 4, 6, 0) & 0xffff, 0xf0);    /* ICC_PMR */
  put_attr(&gic, 6, sysreg(3, 0, 12, 12, 7) & 0xffff, 0x1);   /* ICC_IGRPEN1 */
  put_attr(&gic, 7, 0, 0x08000000);                           /* LEVEL_INFO PPIs */
  its.n = 0;
  put_attr(&its, 0, 4, 0x08080000);
  put_attr(&its, 8, 0x80, 0xb80000004010f007ull); /* CBASER first */
  put_attr(&its, 8, 0x4, 0x4304843b);
  put_attr(&its, 8, 0x88, 0x60);
  put_attr(&its, 8, 0x90, 0x40);
  for (i = 0; i < 8; ++i) put_attr(&its, 8, 0x100 + 8 * i, i < 2 ? 0x8000000040200000ull + i : 0);
  put_attr(&its, 8, 0x0, 0x1); /* GITS_CTLR last */

  EXPECT(vmsnap_writer_set_vcpu_state(w, 0, VMSNAP_ARM64_VCPU_INIT, &init, sizeof init) == 0, "INIT");
  EXPECT(vmsnap_writer_set_vcpu_state(w, 0, VMSNAP_ARM64_MP_STATE, &mp, sizeof mp) == 0, "MP");
  EXPECT(vmsnap_writer_set_vcpu_state(w, 0, VMSNAP_ARM64_EVENTS, &ev, sizeof ev) == 0, "EVENTS");
  EXPECT(vmsnap_writer_set_vcpu_state(w, 0, VMSNAP_ONE_REGS, one.b, one.n) == 0, "ONE_REGS");
  EXPECT(vmsnap_writer_set_vm_state(w, VMSNAP_ARM64_VGIC, gic.a, gic.n * sizeof gic.a[0]) == 0, "VGIC");
  EXPECT(vmsnap_writer_set_vm_state(w, VMSNAP_ARM64_ITS, its.a, its.n * sizeof its.a[0]) == 0, "ITS");
  EXPECT(vmsnap_writer_set_vm_state(w, VMSNAP_ARM64_COUNTER_OFFSET, &counter, sizeof counter) == 0, "COUNTER");
  add_memory(w, 0x40000000, 16 * 4096, 0);
  commit_and_check(w, path);

  EXPECT(vmsnap_open(path, 0, &s) == VMSNAP_OK, "open %s", path);
  if (!s) return;
  expect_state(s, 0, VMSNAP_ARM64_VCPU_INIT, &init, sizeof init, "aarch64 VCPU_INIT");
  expect_state(s, 0, VMSNAP_ARM64_MP_STATE, &mp, sizeof mp, "aarch64 MP_STATE");
  expect_state(s, 0, VMSNAP_ARM64_EVENTS, &ev, sizeof ev, "aarch64 EVENTS");
  expect_state(s, 0, VMSNAP_ONE_REGS, one.b, one.n, "aarch64 ONE_REGS");
  expect_state(s, -1, VMSNAP_ARM64_VGIC, gic.a, gic.n * sizeof gic.a[0], "aarch64 VGIC");
  expect_state(s, -1, VMSNAP_ARM64_ITS, its.a, its.n * sizeof its.a[0], "aarch64 ITS");
  expect_state(s, -1, VMSNAP_ARM64_COUNTER_OFFSET, &counter, sizeof counter, "aarch64 COUNTER_OFFSET");
  vmsnap_close(s);

  /* A vGIC without a register the capture reads is named at commit. */
  snprintf(path, sizeof path, "%s/aarch64-bad.vmsnap", work_dir);
  w = NULL;
  EXPECT(vmsnap_writer_create(path, VMSNAP_ARCH_AARCH64, NULL, &w) == VMSNAP_OK, "create");
  if (!w) return;
  vmsnap_writer_set_vcpu_state(w, 0, VMSNAP_ARM64_VCPU_INIT, &init, sizeof init);
  vmsnap_writer_set_vcpu_state(w, 0, VMSNAP_ARM64_MP_STATE, &mp, sizeof mp);
  vmsnap_writer_set_vcpu_state(w, 0, VMSNAP_ARM64_EVENTS, &ev, sizeof ev);
  vmsnap_writer_set_vcpu_state(w, 0, VMSNAP_ONE_REGS, one.b, one.n);
  vmsnap_writer_set_vm_state(w, VMSNAP_ARM64_VGIC, gic.a, 3 * sizeof gic.a[0]);
  EXPECT(vmsnap_writer_commit(w) == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "VMSNAP_ARM64_VGIC"),
         "a vGIC without its registers is named");
  vmsnap_writer_free(w);
  EXPECT(access(path, F_OK) != 0, "%s exists after a failed commit", path);
}

/* ---- Golden files: values for arch_api_test.sh to compare with inspect --json. */
static uint64_t reg_of(const unsigned char *b, size_t n, uint64_t id) {
  size_t off = 0;
  while (off + 8 <= n) {
    uint64_t rid, v = 0;
    size_t size;
    memcpy(&rid, b + off, 8);
    size = (size_t)1 << ((rid >> 52) & 0xf);
    if (rid == id) {
      memcpy(&v, b + off + 8, size < 8 ? size : 8);
      return v;
    }
    off += 8 + size;
  }
  return ~0ull;
}

static vmsnap_snapshot *open_golden(const char *name) {
  char path[512];
  vmsnap_snapshot *s = NULL;
  snprintf(path, sizeof path, "%s/%s", golden_dir, name);
  EXPECT(vmsnap_open(path, 0, &s) == VMSNAP_OK, "open %s", path);
  return s;
}

/* Lines "FILE PATH VALUE": PATH walks `inspect --json FILE` (list indexes
 * as numbers, -1 the last; "@N" byte N of a hex string; "#" a list's
 * length); VALUE is what the C API answered. */
static void golden(void) {
  static unsigned char b[1 << 16];
  size_t n = 0;
  uint32_t count = 0, v;
  vmsnap_snapshot *s = open_golden("s390x.vmsnap");
  if (s) {
    struct s390_regs r;
    struct s390_sregs sr;
    struct s390_fpu f;
    vmsnap_s390_run_regs run;
    struct s390_tod tod;
    const char *g = "s390x.vmsnap";
    vmsnap_vcpu_count(s, &count);
    for (v = 0; v < count; ++v) {
      EXPECT(vmsnap_vcpu_state(s, v, VMSNAP_S390_REGS, &r, sizeof r, NULL) == 0, "golden s390x REGS");
      EXPECT(vmsnap_vcpu_state(s, v, VMSNAP_S390_SREGS, &sr, sizeof sr, NULL) == 0, "golden s390x SREGS");
      EXPECT(vmsnap_vcpu_state(s, v, VMSNAP_S390_FPU, &f, sizeof f, NULL) == 0, "golden s390x FPU");
      EXPECT(vmsnap_vcpu_state(s, v, VMSNAP_S390_RUN_REGS, &run, sizeof run, NULL) == 0, "golden RUN_REGS");
      EXPECT(vmsnap_vcpu_state(s, v, VMSNAP_ONE_REGS, b, sizeof b, &n) == 0, "golden ONE_REGS");
      printf("%s vcpus/%u/gprs/3 %llu\n", g, v, (unsigned long long)r.gprs[3]);
      printf("%s vcpus/%u/acrs/0 %u\n", g, v, sr.acrs[0]);
      printf("%s vcpus/%u/crs/14 %llu\n", g, v, (unsigned long long)sr.crs[14]);
      printf("%s vcpus/%u/fprs/5 %llu\n", g, v, (unsigned long long)f.fprs[5]);
      printf("%s vcpus/%u/fpc %u\n", g, v, f.fpc);
      printf("%s vcpus/%u/psw_mask %llu\n", g, v, (unsigned long long)run.psw_mask);
      printf("%s vcpus/%u/psw_addr %llu\n", g, v, (unsigned long long)run.psw_addr);
      printf("%s vcpus/%u/prefix %u\n", g, v, run.prefix);
      printf("%s vcpus/%u/cpu_timer %llu\n", g, v, (unsigned long long)reg_of(b, n, 0x5030000000000003ull));
      printf("%s vcpus/%u/clock_comparator %llu\n", g, v, (unsigned long long)reg_of(b, n, 0x5030000000000004ull));
      printf("%s vcpus/%u/todpr %llu\n", g, v, (unsigned long long)reg_of(b, n, 0x5020000000000001ull));
    }
    EXPECT(vmsnap_vm_state(s, VMSNAP_S390_TOD, &tod, sizeof tod, NULL) == 0, "golden TOD");
    printf("%s vm/tod_low %llu\n", g, (unsigned long long)tod.tod);
    EXPECT(vmsnap_vm_state(s, VMSNAP_S390_SKEYS, b, sizeof b, &n) == 0 && n == 32, "golden SKEYS (%zu)", n);
    printf("%s vm/skeys/0/keys@5 %u\n", g, b[5]);
    printf("%s vm/skeys/0/keys@31 %u\n", g, b[31]);
    EXPECT(vmsnap_vm_state(s, VMSNAP_S390_CMMA, b, sizeof b, &n) == 0 && n == 32, "golden CMMA (%zu)", n);
    printf("%s vm/cmma/0/values@4 %u\n", g, b[4]);
    printf("%s vm/cmma/1/values@0 %u\n", g, b[16]);
    vmsnap_close(s);
  }
  s = open_golden("ppc64.vmsnap");
  if (s) {
    struct ppc_regs r;
    struct ppc_sregs sr;
    const char *g = "ppc64.vmsnap";
    EXPECT(vmsnap_vcpu_state(s, 0, VMSNAP_PPC64_REGS, &r, sizeof r, NULL) == 0, "golden ppc64 REGS");
    EXPECT(vmsnap_vcpu_state(s, 0, VMSNAP_PPC64_SREGS, &sr, sizeof sr, NULL) == 0, "golden ppc64 SREGS");
    EXPECT(vmsnap_vcpu_state(s, 0, VMSNAP_ONE_REGS, b, sizeof b, &n) == 0, "golden ppc64 ONE_REGS");
    printf("%s vcpus/0/pc %llu\n", g, (unsigned long long)r.r[0]);
    printf("%s vcpus/0/msr %llu\n", g, (unsigned long long)r.r[5]);
    printf("%s vcpus/0/sprg/7 %llu\n", g, (unsigned long long)r.r[16]);
    printf("%s vcpus/0/gpr/7 %llu\n", g, (unsigned long long)r.r[17 + 7]);
    printf("%s vcpus/0/pvr %u\n", g, sr.pvr);
    printf("%s vcpus/0/slb/1/vsid %llu\n", g, (unsigned long long)sr.u.s.slb[1].slbv);
    {
      size_t off = 0;
      unsigned k = 0;
      while (off < n) {
        uint64_t id;
        memcpy(&id, b + off, 8);
        printf("%s vcpus/0/one_regs/%u/id %llu\n", g, k++, (unsigned long long)id);
        off += 8 + ((size_t)1 << ((id >> 52) & 0xf));
      }
      printf("%s vcpus/0/one_regs# %u\n", g, k);
    }
    EXPECT(vmsnap_vm_state(s, VMSNAP_PPC64_HTAB, b, sizeof b, &n) == 0, "golden HTAB");
    {
      size_t off = 0, valid = 0, total = 0;
      unsigned shift = 4;
      while (off + 8 <= n) {
        uint16_t nv, ni;
        memcpy(&nv, b + off + 4, 2);
        memcpy(&ni, b + off + 6, 2);
        valid += nv;
        total += (size_t)nv + ni;
        off += 8 + 16 * (size_t)nv;
      }
      while (((size_t)1 << (shift - 4)) < total) ++shift;
      printf("%s vm/htab/entries# %zu\n", g, valid);
      printf("%s vm/htab/shift %u\n", g, shift);
    }
    vmsnap_close(s);
  }
  s = open_golden("aarch64.vmsnap");
  if (s) {
    struct arm_init init;
    struct arm_events ev;
    vmsnap_arch arch;
    const char *g = "aarch64.vmsnap";
    EXPECT(vmsnap_arch_of(s, &arch) == 0 && arch == VMSNAP_ARCH_AARCH64 &&
               strcmp(vmsnap_arch_name(arch), "aarch64") == 0,
           "golden arch");
    vmsnap_vcpu_count(s, &count);
    for (v = 0; v < count; ++v) {
      EXPECT(vmsnap_vcpu_state(s, v, VMSNAP_ONE_REGS, b, sizeof b, &n) == 0, "golden aarch64 ONE_REGS");
      printf("%s vcpus/%u/core/pc %llu\n", g, v, (unsigned long long)reg_of(b, n, 0x6030000000100040ull));
      printf("%s vcpus/%u/core/x/5 %llu\n", g, v, (unsigned long long)reg_of(b, n, 0x603000000010000aull));
      printf("%s vcpus/%u/core/pstate %llu\n", g, v, (unsigned long long)reg_of(b, n, 0x6030000000100042ull));
      printf("%s vcpus/%u/timer/cval %llu\n", g, v, (unsigned long long)reg_of(b, n, 0x603000000013df02ull));
      EXPECT(vmsnap_vcpu_state(s, v, VMSNAP_ARM64_VCPU_INIT, &init, sizeof init, NULL) == 0, "golden INIT");
      printf("%s vcpus/%u/init/target %u\n", g, v, init.target);
      printf("%s vcpus/%u/init/features/0 %u\n", g, v, init.features[0]);
      EXPECT(vmsnap_vcpu_state(s, v, VMSNAP_ARM64_EVENTS, &ev, sizeof ev, NULL) == 0, "golden EVENTS");
      printf("%s vcpus/%u/events/serror_esr %llu\n", g, v, (unsigned long long)ev.serror_esr);
    }
    EXPECT(vmsnap_vm_state(s, VMSNAP_ARM64_VGIC, b, sizeof b, &n) == 0, "golden VGIC");
    {
      vmsnap_device_attr a;
      size_t k;
      for (k = 0; k * sizeof a < n; ++k) {
        memcpy(&a, b + k * sizeof a, sizeof a);
        if (a.group == 0 && a.attr == 2) printf("%s vm/gic/dist_base %llu\n", g, (unsigned long long)a.value);
        if (a.group == 0 && a.attr == 3) printf("%s vm/gic/redist_base %llu\n", g, (unsigned long long)a.value);
        if (a.group == 3) printf("%s vm/gic/nr_irqs %llu\n", g, (unsigned long long)a.value);
        if (a.group == 1 && a.attr == 0x104) printf("%s vm/gic/dist/1/value %llu\n", g, (unsigned long long)a.value);
      }
    }
    EXPECT(vmsnap_vm_state(s, VMSNAP_ARM64_ITS, b, sizeof b, &n) == 0 && n >= sizeof(vmsnap_device_attr),
           "golden ITS");
    if (n >= sizeof(vmsnap_device_attr)) {
      vmsnap_device_attr a;
      memcpy(&a, b + n - sizeof a, sizeof a); /* GITS_CTLR comes last */
      printf("%s vm/its/regs/-1/value %llu\n", g, (unsigned long long)a.value);
    }
    vmsnap_close(s);
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s VMSNAP_BINARY GOLDEN_DIR WORK_DIR\n", argv[0]);
    return 2;
  }
  vmsnap_bin = argv[1];
  golden_dir = argv[2];
  work_dir = argv[3];
  test_s390();
  test_ppc64();
  test_aarch64();
  golden();
  if (failures) fprintf(stderr, "%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
