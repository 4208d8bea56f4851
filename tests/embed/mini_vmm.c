/* SPDX-License-Identifier: MIT */
/* A minimal x86-64 VMM in C99 that embeds the installed libvmsnap: it boots a
 * test guest (docs/guest-abi.md), saves it through the C API on the guest's
 * doorbell with a device record of its own, and restores a snapshot (its own
 * or one `vmsnap run` wrote) eagerly or lazily. It uses only
 * <vmsnap/vmsnap.h> and the kernel's headers.
 *
 *   mini_vmm boot GUEST.elf [SNAPSHOT]      run; with SNAPSHOT, save at the
 *                                            doorbell and stop there
 *   mini_vmm restore SNAPSHOT eager|lazy    resume and run to the exit port
 *
 * Exit status: the guest's exit port value, or 125 on any failure. */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vmsnap/vmsnap.h>

#define RAM_SIZE (64u << 20)
#define DEVICE_NAME "mini-vmm/serial"

static int kvm_fd = -1;
static int vm_fd = -1;
static vmsnap_vm *vm;
static uint8_t *ram;
static uint64_t ram_size;
static int vcpu_fd = -1;
static struct kvm_run *run;
static uint64_t serial_bytes; /* the device state this VMM saves */

static void die(const char *what) {
  fprintf(stderr, "mini_vmm: %s: %s\n", what, errno ? strerror(errno) : "failed");
  exit(125);
}

static void check(int rc, const char *what) {
  if (rc != VMSNAP_OK) {
    fprintf(stderr, "mini_vmm: %s: %s: %s\n", what, vmsnap_status_name(rc), vmsnap_last_error());
    exit(125);
  }
}

static void open_vm(void) {
  kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm_fd < 0) die("/dev/kvm");
  vm_fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
  if (vm_fd < 0) die("KVM_CREATE_VM");
  check(vmsnap_vm_attach(vm_fd, &vm), "vmsnap_vm_attach");
}

static void *map_ram(uint64_t size) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) die("mmap guest RAM");
  return p;
}

static void create_vcpu(uint32_t index) {
  int size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
  vcpu_fd = ioctl(vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
  if (size < 0 || vcpu_fd < 0) die("KVM_CREATE_VCPU");
  run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd, 0);
  if (run == MAP_FAILED) die("mmap kvm_run");
  check(vmsnap_vm_add_vcpu(vm, index, vcpu_fd), "vmsnap_vm_add_vcpu");
}

/* ELF64 PT_LOAD segments at their physical addresses; returns the entry. */
static uint64_t load_elf(const char *path) {
  FILE *f = fopen(path, "rb");
  Elf64_Ehdr eh;
  int i;
  if (!f || fread(&eh, sizeof eh, 1, f) != 1 || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) die(path);
  for (i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    if (fseek(f, (long)(eh.e_phoff + (uint64_t)i * sizeof ph), SEEK_SET) != 0 || fread(&ph, sizeof ph, 1, f) != 1) {
      die(path);
    }
    if (ph.p_type != PT_LOAD) continue;
    if (ph.p_paddr + ph.p_memsz > ram_size || ph.p_paddr < 0x100000) die("segment outside guest RAM");
    if (fseek(f, (long)ph.p_offset, SEEK_SET) != 0 || fread(ram + ph.p_paddr, 1, ph.p_filesz, f) != ph.p_filesz) {
      die(path);
    }
  }
  fclose(f);
  return eh.e_entry;
}

/* Long mode as docs/guest-abi.md promises: a flat GDT at 0x1000, identity
 * page tables (2 MiB pages, 4 GiB) at 0x2000-0x7fff, the stack below 1 MiB. */
static void setup_long_mode(uint64_t entry) {
  static const uint64_t gdt[3] = {0, 0x00af9b000000ffffull, 0x00cf93000000ffffull};
  uint64_t *pml4 = (uint64_t *)(ram + 0x2000), *pdpt = (uint64_t *)(ram + 0x3000);
  uint64_t *pd = (uint64_t *)(ram + 0x4000);
  struct kvm_sregs s;
  struct kvm_regs r;
  struct kvm_lapic_state lapic;
  struct kvm_segment code, data;
  uint32_t v;
  uint64_t i;
  struct {
    struct kvm_cpuid2 c;
    struct kvm_cpuid_entry2 e[256];
  } cpuid;

  memcpy(ram + 0x1000, gdt, sizeof gdt);
  pml4[0] = 0x3000 | 3;
  for (i = 0; i < 4; ++i) pdpt[i] = (0x4000 + i * 4096) | 3;
  for (i = 0; i < 4 * 512; ++i) pd[i] = (i << 21) | 0x83;

  memset(&cpuid, 0, sizeof cpuid);
  cpuid.c.nent = 256;
  if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, &cpuid) < 0) die("KVM_GET_SUPPORTED_CPUID");
  for (i = 0; i < cpuid.c.nent; ++i) {
    if (cpuid.e[i].function == 1) cpuid.e[i].ecx |= 1u << 31; /* hypervisor */
  }
  if (ioctl(vcpu_fd, KVM_SET_CPUID2, &cpuid) < 0) die("KVM_SET_CPUID2");

  if (ioctl(vcpu_fd, KVM_GET_SREGS, &s) < 0) die("KVM_GET_SREGS");
  memset(&code, 0, sizeof code);
  code.limit = 0xffffffff;
  code.selector = 0x08;
  code.type = 0xb;
  code.present = 1;
  code.s = 1;
  code.l = 1;
  code.g = 1;
  data = code;
  data.selector = 0x10;
  data.type = 0x3;
  data.l = 0;
  data.db = 1;
  s.cs = code;
  s.ds = s.es = s.fs = s.gs = s.ss = data;
  s.gdt.base = 0x1000;
  s.gdt.limit = sizeof gdt - 1;
  s.cr3 = 0x2000;
  s.cr4 = 1u << 5;
  s.cr0 = 0x80000000u | 0x10000u | 0x20u | 0x10u | 0x1u;
  s.efer = 0x500;
  if (ioctl(vcpu_fd, KVM_SET_SREGS, &s) < 0) die("KVM_SET_SREGS");

  memset(&r, 0, sizeof r);
  r.rip = entry;
  r.rflags = 2;
  r.rsi = 1;
  r.rdx = ram_size;
  r.rsp = 0x100000;
  if (ioctl(vcpu_fd, KVM_SET_REGS, &r) < 0) die("KVM_SET_REGS");

  /* LINT0 ExtINT (the PIC reaches the CPU through it), LINT1 NMI. */
  if (ioctl(vcpu_fd, KVM_GET_LAPIC, &lapic) < 0) die("KVM_GET_LAPIC");
  v = 0x700;
  memcpy(lapic.regs + 0x350, &v, 4);
  v = 0x400;
  memcpy(lapic.regs + 0x360, &v, 4);
  if (ioctl(vcpu_fd, KVM_SET_LAPIC, &lapic) < 0) die("KVM_SET_LAPIC");
}

static void save(const char *path) {
  vmsnap_writer *w;
  vmsnap_write_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.compression = "zstd:1";
  o.tool_version = "mini_vmm 1";
  /* After an exit, KVM completes the instruction only on the next entry:
   * enter once with immediate_exit so the state captured is consistent. */
  run->immediate_exit = 1;
  if (ioctl(vcpu_fd, KVM_RUN, 0) == 0 || errno != EINTR) die("KVM_RUN (immediate exit)");
  run->immediate_exit = 0;
  check(vmsnap_writer_create(path, VMSNAP_ARCH_X86_64, &o, &w), "vmsnap_writer_create");
  check(vmsnap_vm_capture(vm, w), "vmsnap_vm_capture");
  check(vmsnap_writer_add_device(w, DEVICE_NAME, 1, &serial_bytes, sizeof serial_bytes), "vmsnap_writer_add_device");
  check(vmsnap_writer_commit(w), "vmsnap_writer_commit");
  vmsnap_writer_free(w);
}

/* Runs until the exit port; with SAVE_PATH, saves at the doorbell and stops. */
static int run_loop(const char *save_path) {
  for (;;) {
    if (ioctl(vcpu_fd, KVM_RUN, 0) < 0) {
      if (errno == EINTR) continue;
      die("KVM_RUN");
    }
    if (run->exit_reason != KVM_EXIT_IO) {
      fprintf(stderr, "mini_vmm: unexpected exit %u\n", run->exit_reason);
      return 125;
    }
    {
      uint8_t *d = (uint8_t *)run + run->io.data_offset;
      uint32_t k;
      if (run->io.direction == KVM_EXIT_IO_IN) {
        memset(d, 0xff, (size_t)run->io.size * run->io.count);
        if (run->io.port == 0x3fd) d[0] = 0x60;
        continue;
      }
      switch (run->io.port) {
        case 0x3f8:
          for (k = 0; k < run->io.count; ++k) putchar(d[k * run->io.size]);
          serial_bytes += run->io.count;
          fflush(stdout);
          break;
        case 0xf4:
          return d[0];
        case 0xf5:
          if (save_path) {
            save(save_path);
            return 0;
          }
          break;
        default:
          break;
      }
    }
  }
}

static int boot(const char *guest, const char *save_path) {
  vmsnap_x86_vm_config cfg;
  vmsnap_region region;
  uint64_t entry;
  open_vm();
  ram_size = RAM_SIZE;
  ram = map_ram(ram_size);
  memset(&region, 0, sizeof region);
  region.size = ram_size;
  region.host = ram;
  region.name = "ram";
  check(vmsnap_vm_add_memory(vm, &region), "vmsnap_vm_add_memory");
  memset(&cfg, 0, sizeof cfg);
  cfg.tss_addr = 0xfffbd000;
  cfg.identity_map_addr = 0xfffbc000;
  cfg.irqchip = 1;
  cfg.pit = 1;
  cfg.pit_flags = KVM_PIT_SPEAKER_DUMMY;
  cfg.exception_payload = ioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_EXCEPTION_PAYLOAD) > 0;
  check(vmsnap_vm_configure(vm, &cfg), "vmsnap_vm_configure");
  entry = load_elf(guest);
  create_vcpu(0);
  setup_long_mode(entry);
  return run_loop(save_path);
}

static void on_pager_error(int status, const char *message, void *ctx) {
  (void)ctx;
  fprintf(stderr, "mini_vmm: lazy load failed: %s: %s\n", vmsnap_status_name(status), message);
  _exit(125);
}

static int restore(const char *path, const char *mode) {
  vmsnap_snapshot *snap;
  vmsnap_pager *pager = NULL;
  vmsnap_load_options lo;
  uint32_t n, i, vcpus;
  const void *dev;
  size_t dev_size;
  uint32_t dev_version;
  int status;

  check(vmsnap_open(path, 0, &snap), "vmsnap_open");
  if (vmsnap_device_find(snap, DEVICE_NAME, &dev_version, &dev, &dev_size) == VMSNAP_OK &&
      dev_size == sizeof serial_bytes) {
    memcpy(&serial_bytes, dev, sizeof serial_bytes);
    fprintf(stderr, "mini_vmm: %s v%u: %llu serial bytes before the snapshot\n", DEVICE_NAME, dev_version,
            (unsigned long long)serial_bytes);
  }
  check(vmsnap_vcpu_count(snap, &vcpus), "vmsnap_vcpu_count");
  if (vcpus != 1) {
    fprintf(stderr, "mini_vmm: %s has %u vCPUs; this VMM runs one\n", path, vcpus);
    return 125;
  }
  open_vm();
  check(vmsnap_region_count(snap, &n), "vmsnap_region_count");
  for (i = 0; i < n; ++i) {
    vmsnap_region r;
    check(vmsnap_region_at(snap, i, &r), "vmsnap_region_at");
    r.host = map_ram(r.size);
    r.flags = 0;
    if (r.guest_phys_addr == 0) {
      ram = r.host;
      ram_size = r.size;
    }
    check(vmsnap_vm_add_memory(vm, &r), "vmsnap_vm_add_memory");
  }
  check(vmsnap_vm_restore_config(vm, snap), "vmsnap_vm_restore_config");
  memset(&lo, 0, sizeof lo);
  lo.struct_size = sizeof lo;
  lo.mode = strcmp(mode, "lazy") == 0 ? VMSNAP_MEMORY_LAZY : VMSNAP_MEMORY_EAGER;
  lo.on_error = on_pager_error;
  check(vmsnap_vm_load_memory(vm, snap, &lo, &pager), "vmsnap_vm_load_memory");
  create_vcpu(0);
  check(vmsnap_vm_restore_state(vm, snap), "vmsnap_vm_restore_state");
  status = run_loop(NULL);
  if (pager) {
    check(vmsnap_pager_wait(pager), "vmsnap_pager_wait");
    vmsnap_pager_stop(pager);
  }
  vmsnap_vm_free(vm);
  vmsnap_close(snap);
  return status;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOFBF, 1 << 16);
  if (argc >= 3 && strcmp(argv[1], "boot") == 0) return boot(argv[2], argc > 3 ? argv[3] : NULL);
  if (argc == 4 && strcmp(argv[1], "restore") == 0) return restore(argv[2], argv[3]);
  fprintf(stderr, "usage: mini_vmm boot GUEST.elf [SNAPSHOT] | mini_vmm restore SNAPSHOT eager|lazy\n");
  return 125;
}
