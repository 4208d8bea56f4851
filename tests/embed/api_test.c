/* SPDX-License-Identifier: MIT */
/* The C API's promises that a caller notices without a guest: a write that
 * is not committed leaves an existing file untouched and nothing beside it;
 * state goes in and comes back in the kernel's structs; errors name the file
 * and offset; calls out of the restore order are refused with a reason; a
 * warm VM takes a snapshot that fits it and refuses one that does not.
 *   api_test SNAPSHOT WORK_DIR     (SNAPSHOT: any x86_64 snapshot) */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vmsnap/vmsnap.h>

#include "expect.h"


static size_t count_entries(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  size_t n = 0;
  while (d && (e = readdir(d)) != NULL) {
    if (e->d_name[0] != '.' || strlen(e->d_name) > 2) ++n;
  }
  if (d) closedir(d);
  return n;
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *buf;
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = malloc(*len ? *len : 1);
  if (fread(buf, 1, *len, f) != *len) *len = 0;
  fclose(f);
  return buf;
}

/* Copies the snapshot's state into a new writer, with a device record. */
static int copy_state(vmsnap_snapshot *src, vmsnap_writer *w) {
  static const vmsnap_state vcpu_pieces[] = {VMSNAP_X86_MP_STATE, VMSNAP_X86_REGS, VMSNAP_X86_SREGS2,
                                             VMSNAP_X86_XSAVE, VMSNAP_X86_XCRS, VMSNAP_X86_DEBUGREGS,
                                             VMSNAP_X86_LAPIC, VMSNAP_X86_MSRS, VMSNAP_X86_EVENTS,
                                             VMSNAP_X86_CPUID, VMSNAP_X86_TSC_KHZ};
  static const vmsnap_state vm_pieces[] = {VMSNAP_X86_VM_CONFIG, VMSNAP_X86_PIC_MASTER, VMSNAP_X86_PIC_SLAVE,
                                           VMSNAP_X86_IOAPIC, VMSNAP_X86_PIT, VMSNAP_X86_CLOCK};
  static unsigned char buf[1 << 16];
  uint32_t n, i, k;
  size_t size;
  vmsnap_vcpu_count(src, &n);
  for (i = 0; i < n; ++i) {
    for (k = 0; k < sizeof vcpu_pieces / sizeof vcpu_pieces[0]; ++k) {
      if (vmsnap_vcpu_state(src, i, vcpu_pieces[k], buf, sizeof buf, &size) != VMSNAP_OK) continue;
      if (vmsnap_writer_set_vcpu_state(w, i, vcpu_pieces[k], buf, size) != VMSNAP_OK) return 1;
    }
  }
  for (k = 0; k < sizeof vm_pieces / sizeof vm_pieces[0]; ++k) {
    if (vmsnap_vm_state(src, vm_pieces[k], buf, sizeof buf, &size) != VMSNAP_OK) continue;
    if (vmsnap_writer_set_vm_state(w, vm_pieces[k], buf, size) != VMSNAP_OK) return 1;
  }
  return vmsnap_writer_add_device(w, "test/dev", 7, "abc", 3);
}

/* Whether the page at P is in memory. */
static int resident(const void *p) {
  unsigned char in = 0;
  return mincore((void *)((uintptr_t)p & ~(uintptr_t)4095), 4096, &in) == 0 && (in & 1);
}

/* The first nonzero page of SNAP's first region at or above FROM, or SIZE. */
static uint64_t nonzero_page(const vmsnap_snapshot *snap, uint64_t from, uint64_t size) {
  unsigned char page[4096];
  for (uint64_t gpa = from; gpa < size; gpa += 4096) {
    memset(page, 0, sizeof page);
    vmsnap_read_memory(snap, gpa, page, sizeof page);
    if (page[0] || memcmp(page, page + 1, sizeof page - 1)) return gpa;
  }
  return size;
}

/* A lazy load of SRC into the warm VM (checked and configured for it, no
 * restore begun) with its fill held and one first page: that page comes
 * in at once, a page in another chunk only after vmsnap_pager_release.
 * Cancelled after. */
static void check_held_fill(vmsnap_vm *vm, const vmsnap_snapshot *src, unsigned char *ram, uint64_t size) {
  const uint64_t first = nonzero_page(src, 0, size);
  /* A later page, in a later chunk (the writer's chunks are 1 MiB; the
   * pager copies a few pages after one it serves, but only from its chunk). */
  const uint64_t chunk = 1u << 20;
  const uint64_t later = first < size ? nonzero_page(src, (first & ~(chunk - 1)) + chunk, size) : size;
  unsigned char want[4096];
  vmsnap_load_options lo;
  vmsnap_pager *pager = NULL;
  int waited;
  EXPECT(later < size, "held fill: the snapshot holds nonzero pages in one chunk only");
  if (later >= size) return;
  memset(&lo, 0, sizeof lo);
  lo.struct_size = sizeof lo;
  lo.mode = VMSNAP_MEMORY_LAZY;
  lo.flags = VMSNAP_LOAD_HOLD_FILL;
  lo.first_pages = &first;
  lo.first_page_count = 1;
  EXPECT(vmsnap_vm_restore_check(vm, src, NULL) == VMSNAP_OK, "held fill: check");
  EXPECT(vmsnap_vm_restore_config(vm, src) == VMSNAP_OK, "held fill: config");
  EXPECT(vmsnap_vm_load_memory(vm, src, &lo, &pager) == VMSNAP_OK && pager, "held fill: load: %s",
         vmsnap_last_error());
  if (!pager) return;
  /* Looked at without touching it (mincore): a read would fault it in. */
  for (waited = 0; waited < 5000 && !resident(ram + first); waited += 10) usleep(10000);
  EXPECT(resident(ram + first), "held fill: first page 0x%llx not in after 5 s", (unsigned long long)first);
  usleep(300000); /* well past the pager's first faults' window */
  EXPECT(!resident(ram + later), "held fill: page 0x%llx filled before the release", (unsigned long long)later);
  vmsnap_pager_release(pager);
  /* Polled first: a fill that never begins must fail here, not hang in
   * the wait. */
  for (waited = 0; waited < 10000 && !resident(ram + later); waited += 10) usleep(10000);
  EXPECT(resident(ram + later), "held fill: page 0x%llx not filled 10 s after the release",
         (unsigned long long)later);
  if (resident(ram + later)) {
    EXPECT(vmsnap_pager_wait(pager) == VMSNAP_OK, "held fill: wait: %s", vmsnap_last_error());
    vmsnap_read_memory(src, later, want, sizeof want);
    EXPECT(memcmp(ram + later, want, sizeof want) == 0, "held fill: page 0x%llx differs", (unsigned long long)later);
  }
  vmsnap_pager_stop(pager);
  EXPECT(vmsnap_vm_restore_cancel(vm) == VMSNAP_OK, "held fill: cancel: %s", vmsnap_last_error());
}

int main(int argc, char **argv) {
  vmsnap_snapshot *src, *copy;
  vmsnap_writer *w;
  vmsnap_write_options opts;
  vmsnap_region r;
  struct kvm_regs regs, regs2;
  char path[4096], existing[4096];
  size_t size, before_len, after_len;
  char *before, *after;
  uint8_t *ram;
  const void *data;
  uint32_t version;
  int rc;

  if (argc != 3) return 2;
  EXPECT(vmsnap_open(argv[1], 0, &src) == VMSNAP_OK, "open %s", argv[1]);
  if (failures) return 1;

  /* A buffer too small: the needed size comes back. */
  rc = vmsnap_vcpu_state(src, 0, VMSNAP_X86_REGS, &regs, 8, &size);
  EXPECT(rc == VMSNAP_E_BUFFER_TOO_SMALL && size == sizeof regs, "small buffer: rc %d size %zu", rc, size);
  EXPECT(vmsnap_vcpu_state(src, 0, VMSNAP_X86_REGS, &regs, sizeof regs, NULL) == VMSNAP_OK, "regs");
  rc = vmsnap_vcpu_state(src, 99, VMSNAP_X86_REGS, &regs, sizeof regs, NULL);
  EXPECT(rc == VMSNAP_E_NOT_FOUND && strstr(vmsnap_last_error(), "vCPU 99"), "vCPU 99: rc %d", rc);

  /* A full round trip through the writer: state and a device record. */
  vmsnap_region_at(src, 0, &r);
  ram = calloc(1, r.size);
  EXPECT(vmsnap_read_memory(src, r.guest_phys_addr, ram, r.size) == VMSNAP_OK, "read memory");
  snprintf(path, sizeof path, "%s/copy.vmsnap", argv[2]);
  memset(&opts, 0, sizeof opts);
  opts.struct_size = sizeof opts;
  opts.compression = "none"; /* raw chunks: the first stored page sits at file offset 4096 */
  EXPECT(vmsnap_writer_create(path, VMSNAP_ARCH_X86_64, &opts, &w) == VMSNAP_OK, "create");
  EXPECT(copy_state(src, w) == VMSNAP_OK, "copy state");
  r.host = ram;
  EXPECT(vmsnap_writer_add_region(w, &r) == VMSNAP_OK, "add region");
  rc = vmsnap_writer_add_region(w, &r);
  EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "ascending"), "overlap refused: %d", rc);
  EXPECT(vmsnap_writer_commit(w) == VMSNAP_OK, "commit");
  vmsnap_writer_free(w);
  EXPECT(vmsnap_open(path, 0, &copy) == VMSNAP_OK, "open copy");
  EXPECT(vmsnap_verify(copy, NULL, NULL) == VMSNAP_OK, "verify copy");
  vmsnap_vcpu_state(copy, 0, VMSNAP_X86_REGS, &regs2, sizeof regs2, NULL);
  EXPECT(memcmp(&regs, &regs2, sizeof regs) == 0, "registers differ after the round trip");
  EXPECT(vmsnap_device_find(copy, "test/dev", &version, &data, &size) == VMSNAP_OK && version == 7 && size == 3 &&
             memcmp(data, "abc", 3) == 0,
         "device record");
  EXPECT(vmsnap_device_find(copy, "nope", &version, &data, &size) == VMSNAP_E_NOT_FOUND, "missing device");
  vmsnap_close(copy);

  /* Freed without a commit over an existing file: the file is untouched
   * and no temporary file is left. */
  snprintf(existing, sizeof existing, "%s/existing.vmsnap", argv[2]);
  rename(path, existing);
  before = slurp(existing, &before_len);
  size = count_entries(argv[2]);
  EXPECT(vmsnap_writer_create(existing, VMSNAP_ARCH_X86_64, NULL, &w) == VMSNAP_OK, "create over existing");
  EXPECT(copy_state(src, w) == VMSNAP_OK, "copy state");
  EXPECT(vmsnap_writer_add_region(w, &r) == VMSNAP_OK, "add region");
  vmsnap_writer_free(w);
  after = slurp(existing, &after_len);
  EXPECT(before && after && before_len == after_len && memcmp(before, after, before_len) == 0,
         "existing file changed by an aborted write");
  EXPECT(count_entries(argv[2]) == size, "a temporary file was left behind");

  /* A commit that fails (no vCPU state) leaves nothing either. */
  EXPECT(vmsnap_writer_create(existing, VMSNAP_ARCH_X86_64, NULL, &w) == VMSNAP_OK, "create");
  rc = vmsnap_writer_commit(w);
  EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), existing), "empty commit: %d", rc);
  vmsnap_writer_free(w);
  free(after);
  after = slurp(existing, &after_len);
  EXPECT(after && after_len == before_len && memcmp(before, after, before_len) == 0, "failed commit changed the file");
  EXPECT(count_entries(argv[2]) == size, "a failed commit left a file behind");

  /* A corrupt byte in the chunk area: open succeeds, verify names where. */
  {
    FILE *f = fopen(existing, "r+b");
    int c;
    fseek(f, 4096 + 100, SEEK_SET);
    c = fgetc(f);
    fseek(f, 4096 + 100, SEEK_SET);
    fputc(c ^ 0xff, f);
    fclose(f);
    EXPECT(vmsnap_open(existing, 0, &copy) == VMSNAP_OK, "open corrupt");
    rc = vmsnap_verify(copy, NULL, NULL);
    EXPECT(rc == VMSNAP_E_CORRUPT && strstr(vmsnap_last_error(), "offset") && strstr(vmsnap_last_error(), "chunk"),
           "corrupt chunk: rc %d", rc);
    vmsnap_close(copy);
  }

  /* The restore order is the library's business. */
  {
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    int vmfd = kvm >= 0 ? ioctl(kvm, KVM_CREATE_VM, 0) : -1;
    vmsnap_vm *vm;
    if (vmfd >= 0 && vmsnap_vm_attach(vmfd, &vm) == VMSNAP_OK) {
      rc = vmsnap_vm_load_memory(vm, src, NULL, NULL);
      EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "vmsnap_vm_restore_config"),
             "load before config: %d", rc);
      rc = vmsnap_vm_add_vcpu(vm, 0, kvm);
      EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "irqchip"), "vCPU before config: %d", rc);
      rc = vmsnap_vm_restore_state(vm, src);
      EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT, "state before config: %d", rc);
      rc = vmsnap_vm_restore_config(vm, src);
      EXPECT(rc == VMSNAP_OK, "restore config: %d %s", rc, vmsnap_last_error());
      rc = vmsnap_vm_restore_config(vm, src);
      EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "already"), "config twice: %d", rc);
      /* Memory that is not the snapshot's map is refused before a byte moves. */
      rc = vmsnap_vm_load_memory(vm, src, NULL, NULL);
      EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "memory regions"),
             "load without regions: %d %s", rc, vmsnap_last_error());
      uint32_t nregions = 0;
      vmsnap_region_count(src, &nregions);
      void *maps[8] = {0};
      uint64_t sizes[8] = {0};
      for (uint32_t i = 0; i < nregions && i < 8; ++i) {
        vmsnap_region sr;
        vmsnap_region_at(src, i, &sr);
        sizes[i] = sr.size;
        maps[i] = mmap(NULL, sr.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        sr.host = maps[i];
        sr.flags = 0;
        rc = vmsnap_vm_add_memory(vm, &sr);
        EXPECT(rc == VMSNAP_OK, "add region %u: %d %s", i, rc, vmsnap_last_error());
      }
      rc = vmsnap_vm_load_memory(vm, src, NULL, NULL);
      EXPECT(rc == VMSNAP_OK, "eager load: %d %s", rc, vmsnap_last_error());
      rc = vmsnap_vm_load_memory(vm, src, NULL, NULL);
      EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "already"), "load twice: %d %s", rc,
             vmsnap_last_error());
      rc = vmsnap_vm_restore_state(vm, src);
      EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "vCPU"), "state without vCPUs: %d %s",
             rc, vmsnap_last_error());
      vmsnap_vm_free(vm);
      for (uint32_t i = 0; i < 8; ++i) {
        if (maps[i] && maps[i] != MAP_FAILED) munmap(maps[i], sizes[i]);
      }
      close(vmfd);
    }
    if (kvm >= 0) close(kvm);
  }

  /* A warm VM: made before its snapshot is known, checked to fit, then
   * restored with its vCPUs already there; the file's raw memory may be
   * mapped rather than copied. */
  {
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    uint32_t nregions = 0, nvcpus = 0;
    vmsnap_x86_vm_config config;
    vmsnap_region_count(src, &nregions);
    vmsnap_vcpu_count(src, &nvcpus);
    EXPECT(vmsnap_vm_state(src, VMSNAP_X86_VM_CONFIG, &config, sizeof config, NULL) == VMSNAP_OK, "config");
    for (int extra = 1; extra >= 0 && kvm >= 0; --extra) {
      /* extra: one vCPU more than the snapshot has, so it does not fit. */
      int vmfd = ioctl(kvm, KVM_CREATE_VM, 0);
      int vcpus[8];
      uint32_t n = nvcpus + (uint32_t)extra;
      void *maps[8] = {0};
      uint64_t sizes[8] = {0};
      vmsnap_vm *vm = NULL;
      vmsnap_restore_options bad = {2, 0};
      EXPECT(vmfd >= 0 && vmsnap_vm_attach(vmfd, &vm) == VMSNAP_OK, "attach");
      if (!vm) break;
      rc = vmsnap_vm_prepare_warm(vm);
      EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "configure"), "warm unconfigured: %d", rc);
      rc = vmsnap_vm_arm_pager(vm);
      EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "warm"), "arm before warm: %d", rc);
      for (uint32_t i = 0; i < nregions && i < 8; ++i) {
        vmsnap_region sr;
        vmsnap_region_at(src, i, &sr);
        sizes[i] = sr.size;
        maps[i] = mmap(NULL, sr.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        sr.host = maps[i];
        EXPECT(vmsnap_vm_add_memory(vm, &sr) == VMSNAP_OK, "warm region %u", i);
      }
      EXPECT(vmsnap_vm_configure(vm, &config) == VMSNAP_OK, "warm configure");
      for (uint32_t i = 0; i < n && i < 8; ++i) {
        vcpus[i] = ioctl(vmfd, KVM_CREATE_VCPU, i);
        EXPECT(vmsnap_vm_add_vcpu(vm, i, vcpus[i]) == VMSNAP_OK, "warm vCPU %u", i);
      }
      rc = vmsnap_vm_check_fit(vm, src);
      EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT, "fit before warm: %d", rc);
      EXPECT(vmsnap_vm_prepare_warm(vm) == VMSNAP_OK, "prepare warm");
      /* Armed while it waits: the lazy load below hands the pager its
       * snapshot; the VM that does not fit is freed armed. */
      EXPECT(vmsnap_vm_arm_pager(vm) == VMSNAP_OK, "arm: %s", vmsnap_last_error());
      rc = vmsnap_vm_arm_pager(vm);
      EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "armed"), "arm twice: %d", rc);
      rc = vmsnap_vm_add_vcpu(vm, n, kvm);
      EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "warm"), "vCPU after warm: %d", rc);
      rc = vmsnap_vm_check_fit(vm, src);
      if (extra) {
        EXPECT(rc == VMSNAP_E_UNSUPPORTED && strstr(vmsnap_last_error(), "vCPUs"), "unfit: %d", rc);
        rc = vmsnap_vm_restore_check(vm, src, NULL);
        EXPECT(rc == VMSNAP_E_UNSUPPORTED && strstr(vmsnap_last_error(), "does not fit"), "unfit restore: %d", rc);
      } else {
        vmsnap_load_options lo;
        vmsnap_pager *pager = NULL;
        struct kvm_regs want, got;
        unsigned char page[4096], from_file[4096];
        uint64_t gpa = 0;
        EXPECT(rc == VMSNAP_OK, "fit: %d", rc);
        /* Cancelled before any load: the armed pager and its memory stay
         * as they were for the load below. */
        EXPECT(vmsnap_vm_restore_check(vm, src, NULL) == VMSNAP_OK, "check before cancel");
        EXPECT(vmsnap_vm_restore_config(vm, src) == VMSNAP_OK, "config before cancel");
        EXPECT(vmsnap_vm_restore_cancel(vm) == VMSNAP_OK, "cancel before load: %s", vmsnap_last_error());
        /* The armed pager then pages a load in (no file mapping): the
         * guest's memory holds the snapshot's pages. */
        memset(&lo, 0, sizeof lo);
        lo.struct_size = sizeof lo;
        lo.mode = VMSNAP_MEMORY_LAZY;
        EXPECT(vmsnap_vm_restore_check(vm, src, NULL) == VMSNAP_OK, "check after early cancel");
        EXPECT(vmsnap_vm_restore_config(vm, src) == VMSNAP_OK, "config after early cancel");
        rc = vmsnap_vm_load_memory(vm, src, &lo, &pager);
        EXPECT(rc == VMSNAP_OK && pager, "paged load after early cancel: %d", rc);
        for (gpa = 0; gpa < sizes[0]; gpa += 4096) {
          vmsnap_read_memory(src, gpa, from_file, sizeof from_file);
          if (from_file[0] || memcmp(from_file, from_file + 1, sizeof from_file - 1)) break;
        }
        if (gpa < sizes[0]) {
          EXPECT(memcmp((const unsigned char *)maps[0] + gpa, from_file, sizeof from_file) == 0,
                 "paged in after early cancel at 0x%llx", (unsigned long long)gpa);
        }
        EXPECT(vmsnap_pager_wait(pager) == VMSNAP_OK, "pager after early cancel: %s", vmsnap_last_error());
        vmsnap_pager_stop(pager);
        pager = NULL;
        EXPECT(vmsnap_vm_restore_cancel(vm) == VMSNAP_OK, "cancel after paged load: %s", vmsnap_last_error());
        check_held_fill(vm, src, (unsigned char *)maps[0], sizes[0]);
        rc = vmsnap_vm_restore_check(vm, src, &bad);
        EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "struct_size"), "bad options: %d", rc);
        EXPECT(vmsnap_vm_restore_check(vm, src, NULL) == VMSNAP_OK, "warm check");
        rc = vmsnap_vm_restore_check(vm, src, NULL);
        EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "begun"), "check twice: %d", rc);
        rc = vmsnap_vm_load_memory(vm, src, NULL, NULL);
        EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "configuration"), "load early: %d", rc);
        EXPECT(vmsnap_vm_restore_config(vm, src) == VMSNAP_OK, "warm config");
        memset(&lo, 0, sizeof lo);
        lo.struct_size = sizeof lo;
        lo.mode = VMSNAP_MEMORY_LAZY;
        lo.flags = VMSNAP_LOAD_MAP_FILE;
        rc = vmsnap_vm_load_memory(vm, src, &lo, &pager);
        EXPECT(rc == VMSNAP_OK && pager, "warm lazy load: %d", rc);
        /* Restored ahead of its start (all but the timers), then undone:
         * the memory is untouched again and the restore starts over. */
        EXPECT(vmsnap_vm_restore_untimed_state(vm, src) == VMSNAP_OK, "untimed: %s", vmsnap_last_error());
        rc = vmsnap_vm_restore_untimed_state(vm, src);
        EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "already"), "untimed twice: %d", rc);
        EXPECT(vmsnap_x86_get_regs(src, 0, &want) == VMSNAP_OK && ioctl(vcpus[0], KVM_GET_REGS, &got) == 0 &&
                   want.rip == got.rip,
               "registers restored ahead");
        vmsnap_pager_stop(pager);
        pager = NULL;
        EXPECT(vmsnap_vm_restore_cancel(vm) == VMSNAP_OK, "cancel: %s", vmsnap_last_error());
        for (gpa = 0; gpa < sizes[0]; gpa += 4096) {
          vmsnap_read_memory(src, gpa, from_file, sizeof from_file);
          if (from_file[0] || memcmp(from_file, from_file + 1, sizeof from_file - 1)) break;
        }
        if (gpa < sizes[0]) {
          const unsigned char *p = (const unsigned char *)maps[0] + gpa;
          EXPECT(p[0] == 0 && memcmp(p, p + 1, 4095) == 0, "memory untouched after cancel at 0x%llx",
                 (unsigned long long)gpa);
        }
        EXPECT(vmsnap_vm_restore_check(vm, src, NULL) == VMSNAP_OK, "check after cancel: %s", vmsnap_last_error());
        EXPECT(vmsnap_vm_restore_config(vm, src) == VMSNAP_OK, "config after cancel");
        rc = vmsnap_vm_load_memory(vm, src, &lo, &pager);
        EXPECT(rc == VMSNAP_OK && pager, "load after cancel: %d", rc);
        EXPECT(vmsnap_vm_restore_untimed_state(vm, src) == VMSNAP_OK, "untimed again");
        EXPECT(vmsnap_vm_restore_state(vm, src) == VMSNAP_OK, "warm state");
        rc = vmsnap_vm_restore_cancel(vm);
        EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "restored"), "cancel late: %d", rc);
        EXPECT(vmsnap_pager_wait(pager) == VMSNAP_OK, "pager wait");
        /* The vCPU holds the snapshot's registers, the memory its pages. */
        EXPECT(vmsnap_x86_get_regs(src, 0, &want) == VMSNAP_OK && ioctl(vcpus[0], KVM_GET_REGS, &got) == 0 &&
                   want.rip == got.rip && want.rsp == got.rsp,
               "warm vCPU 0 registers");
        for (gpa = 0; gpa < sizes[0]; gpa += 4096) {
          memset(from_file, 0, sizeof from_file);
          vmsnap_read_memory(src, gpa, from_file, sizeof from_file);
          if (from_file[0] || memcmp(from_file, from_file + 1, sizeof from_file - 1)) break;
        }
        EXPECT(gpa < sizes[0], "warm memory: the snapshot's first region holds no nonzero page to compare");
        if (gpa < sizes[0]) {
          memcpy(page, (unsigned char *)maps[0] + gpa, sizeof page);
          EXPECT(memcmp(page, from_file, sizeof page) == 0, "warm memory at 0x%llx", (unsigned long long)gpa);
        }
        vmsnap_pager_stop(pager);
      }
      vmsnap_vm_free(vm);
      for (uint32_t i = 0; i < n && i < 8; ++i) close(vcpus[i]);
      for (uint32_t i = 0; i < 8; ++i) {
        if (maps[i] && maps[i] != MAP_FAILED) munmap(maps[i], sizes[i]);
      }
      close(vmfd);
    }
    if (kvm >= 0) close(kvm);
  }

  vmsnap_close(src);
  free(ram);
  free(before);
  free(after);
  if (failures) fprintf(stderr, "%d failures\n", failures);
  return failures ? 1 : 0;
}
