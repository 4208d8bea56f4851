/* SPDX-License-Identifier: MIT */
/* libvmsnap: the stable C API for reading, writing, capturing and restoring
 * .vmsnap snapshots of KVM virtual machines. See docs/library.md. */
#ifndef VMSNAP_VMSNAP_H
#define VMSNAP_VMSNAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define VMSNAP_API __attribute__((visibility("default")))
#else
#define VMSNAP_API
#endif

/* ---- Versions -------------------------------------------------------------
 * The library follows semantic versioning: the major version changes only
 * when the API or ABI breaks (and with it the SONAME, libvmsnap.so.MAJOR).
 * The file format has its own MAJOR.MINOR (docs/format.md). */
#define VMSNAP_VERSION_MAJOR 0
#define VMSNAP_VERSION_MINOR 3
#define VMSNAP_VERSION_PATCH 0

/* "0.3.0": the version of the library actually loaded. Thread-safe. */
VMSNAP_API const char *vmsnap_version(void);
/* The file-format version this library writes; it reads every minor of that
 * major. Thread-safe. */
VMSNAP_API void vmsnap_format_version(uint16_t *major, uint16_t *minor);

/* ---- Errors ---------------------------------------------------------------
 * Every call that can fail returns a vmsnap_status. On failure the calling
 * thread's last error message says what failed and where ("chunk 3 (guest
 * 0x100000-0x200000) at file offset 0x5000: checksum mismatch"). */
typedef enum vmsnap_status {
  VMSNAP_OK = 0,
  VMSNAP_E_INVALID_ARGUMENT = 1, /* malformed request, call out of order */
  VMSNAP_E_NOT_FOUND = 2,        /* file, parent, or state item absent */
  VMSNAP_E_IO = 3,
  VMSNAP_E_NO_SPACE = 4,
  VMSNAP_E_CORRUPT = 5,          /* a check of the file failed */
  VMSNAP_E_UNSUPPORTED = 6,      /* newer format major, missing host feature */
  VMSNAP_E_WRONG_ARCH = 7,
  VMSNAP_E_KVM = 8,              /* an ioctl failed */
  VMSNAP_E_BUFFER_TOO_SMALL = 9, /* the needed size was stored in *size */
  VMSNAP_E_INTERNAL = 10
} vmsnap_status;

/* The calling thread's last error message ("" when none). The pointer stays
 * valid until the thread's next vmsnap call. Thread-safe (per thread). */
VMSNAP_API const char *vmsnap_last_error(void);
/* "OK", "INVALID_ARGUMENT", ... Thread-safe. */
VMSNAP_API const char *vmsnap_status_name(int status);

/* ---- Common types -------------------------------------------------------- */
typedef enum vmsnap_arch {
  VMSNAP_ARCH_X86_64 = 0,
  VMSNAP_ARCH_S390X = 1,
  VMSNAP_ARCH_PPC64 = 2,
  VMSNAP_ARCH_AARCH64 = 3
} vmsnap_arch;

/* One guest memory region: a KVM memory slot and, where the call needs
 * memory, the host mapping that backs it. */
typedef struct vmsnap_region {
  uint32_t slot;            /* KVM slot id (as_id << 16 | id) */
  uint32_t flags;           /* KVM_MEM_* */
  uint64_t guest_phys_addr; /* page-aligned */
  uint64_t size;            /* bytes, page-aligned */
  void *host;               /* NULL in answers from a snapshot */
  const char *name;         /* may be NULL */
} vmsnap_region;

/* Called with (bytes done, bytes total) while memory is written or read. */
typedef void (*vmsnap_progress_fn)(uint64_t done, uint64_t total, void *ctx);

/* Pieces of state, each in the kernel's own layout (<linux/kvm.h> of the
 * snapshot's architecture), exactly as the KVM ioctl named beside it takes
 * it, so a VMM passes what it got from KVM_GET_* and gives KVM_SET_* what it
 * reads here. */
typedef enum vmsnap_state {
  /* x86_64, per vCPU */
  VMSNAP_X86_MP_STATE = 1,  /* struct kvm_mp_state           KVM_GET_MP_STATE */
  VMSNAP_X86_REGS = 2,      /* struct kvm_regs               KVM_GET_REGS */
  VMSNAP_X86_SREGS = 3,     /* struct kvm_sregs              KVM_GET_SREGS */
  VMSNAP_X86_SREGS2 = 4,    /* struct kvm_sregs2             KVM_GET_SREGS2 */
  VMSNAP_X86_XSAVE = 5,     /* the XSAVE area, bytes         KVM_GET_XSAVE(2) */
  VMSNAP_X86_XCRS = 6,      /* struct kvm_xcrs               KVM_GET_XCRS */
  VMSNAP_X86_DEBUGREGS = 7, /* struct kvm_debugregs          KVM_GET_DEBUGREGS */
  VMSNAP_X86_LAPIC = 8,     /* struct kvm_lapic_state        KVM_GET_LAPIC */
  VMSNAP_X86_MSRS = 9,      /* struct kvm_msr_entry[] (16 bytes each: index, reserved, data) */
  VMSNAP_X86_EVENTS = 10,   /* struct kvm_vcpu_events        KVM_GET_VCPU_EVENTS */
  VMSNAP_X86_CPUID = 11,    /* struct kvm_cpuid_entry2[] (40 bytes each) */
  VMSNAP_X86_TSC_KHZ = 12,  /* uint32_t                      KVM_GET_TSC_KHZ */
  /* x86_64, per VM */
  VMSNAP_X86_VM_CONFIG = 32, /* struct vmsnap_x86_vm_config (below) */
  VMSNAP_X86_PIC_MASTER = 33, /* struct kvm_irqchip, chip_id 0  KVM_GET_IRQCHIP */
  VMSNAP_X86_PIC_SLAVE = 34,  /* struct kvm_irqchip, chip_id 1 */
  VMSNAP_X86_IOAPIC = 35,     /* struct kvm_irqchip, chip_id 2 */
  VMSNAP_X86_PIT = 36,        /* struct kvm_pit_state2       KVM_GET_PIT2 */
  VMSNAP_X86_CLOCK = 37,      /* struct kvm_clock_data       KVM_GET_CLOCK */
  /* s390x, ppc64 and aarch64, per vCPU: the registers a VMM moves with
   * KVM_GET_ONE_REG / KVM_SET_ONE_REG, as packed records
   *   { uint64_t id; uint8_t value[N]; }
   * where N is the size the id encodes (1 << ((id >> 52) & 0xf) bytes,
   * KVM_REG_SIZE) and value holds the bytes KVM_GET_ONE_REG wrote (host
   * order). vmsnap_vcpu_state answers them in the order a restore sets them;
   * each architecture stores the registers its capture reads (see
   * docs/library.md), and vmsnap_writer_commit refuses a register it would
   * not store rather than drop it. */
  VMSNAP_ONE_REGS = 16,
  /* s390x, per vCPU. The struct layouts are those of
   * arch/s390/include/uapi/asm/kvm.h. */
  VMSNAP_S390_REGS = 64,      /* struct kvm_regs: uint64_t gprs[16]     KVM_GET_REGS */
  VMSNAP_S390_MP_STATE = 65,  /* struct kvm_mp_state                    KVM_GET_MP_STATE */
  VMSNAP_S390_SREGS = 66,     /* struct kvm_sregs: uint32_t acrs[16]; uint64_t crs[16]  KVM_GET_SREGS */
  VMSNAP_S390_FPU = 67,       /* struct kvm_fpu: uint32_t fpc; uint64_t fprs[16] (136 bytes)  KVM_GET_FPU */
  VMSNAP_S390_RUN_REGS = 68,  /* struct vmsnap_s390_run_regs (below): PSW and prefix from kvm_run */
  /* ONE_REGS of s390x: CPU_TIMER, CLOCK_COMP, TODPR, PP, GBEA. */
  /* s390x, per VM */
  VMSNAP_S390_TOD = 80,       /* struct kvm_s390_vm_tod_clock {uint8_t epoch_idx; uint64_t tod;}
                                 KVM_S390_VM_TOD_HIGH / _LOW */
  VMSNAP_S390_SKEYS = 81,     /* storage keys, one byte per guest page of the memory map
                                 (regions in ascending order), as KVM_S390_GET_SKEYS fills
                                 them; absent: the guest never used keys (GET_SKEYS_NONE) */
  VMSNAP_S390_CMMA = 82,      /* CMMA values in the same layout, as KVM_S390_GET_CMMA_BITS
                                 fills them; absent: CMMA was not enabled */
  /* ppc64 (book3s HV), per vCPU; layouts of arch/powerpc/include/uapi/asm/kvm.h.
   * ppc64 has no MP state (KVM refuses the MP state ioctls there). */
  VMSNAP_PPC64_REGS = 96,     /* struct kvm_regs (392 bytes)            KVM_GET_REGS */
  VMSNAP_PPC64_SREGS = 97,    /* struct kvm_sregs (1232 bytes): pvr and the book3s sdr1
                                 and slb[64]; the valid SLB entries are kept, packed from
                                 slot 0, the rest reads as zero      KVM_GET_SREGS */
  /* ONE_REGS of ppc64: FPR0-31, VR0-31, VSR0-31 and the SPRs of a book3s HV
   * resume (DSCR ... DEC_EXPIRY, docs/library.md); those the CPU lacks are left out. */
  /* ppc64, per VM */
  VMSNAP_PPC64_HTAB = 112,    /* the hashed page table as the first pass of a
                                 KVM_PPC_GET_HTAB_FD read fd returns it (and a
                                 KVM_GET_HTAB_WRITE fd takes it): records of
                                 struct kvm_get_htab_header {uint32_t index;
                                 uint16_t n_valid, n_invalid;} (host order), each
                                 followed by n_valid HPTEs of two big-endian
                                 doublewords, covering every index of the table
                                 (whose size they give). */
  /* aarch64, per vCPU; layouts of arch/arm64/include/uapi/asm/kvm.h. */
  VMSNAP_ARM64_VCPU_INIT = 128, /* struct kvm_vcpu_init {uint32_t target; uint32_t features[7];}
                                   as given to KVM_ARM_VCPU_INIT */
  VMSNAP_ARM64_MP_STATE = 129,  /* struct kvm_mp_state                  KVM_GET_MP_STATE */
  VMSNAP_ARM64_EVENTS = 130,    /* struct kvm_vcpu_events (64 bytes)    KVM_GET_VCPU_EVENTS */
  /* ONE_REGS of aarch64: every register KVM_GET_REG_LIST names. */
  /* aarch64, per VM */
  VMSNAP_ARM64_VGIC = 144,      /* struct vmsnap_device_attr[]: the vGICv3's attributes
                                   (KVM_DEV_ARM_VGIC_GRP_ADDR, _NR_IRQS, _DIST_REGS,
                                   _REDIST_REGS, _CPU_SYSREGS, _LEVEL_INFO) */
  VMSNAP_ARM64_ITS = 145,       /* struct vmsnap_device_attr[]: the ITS's
                                   (KVM_DEV_ARM_VGIC_GRP_ADDR, _ITS_REGS) */
  VMSNAP_ARM64_COUNTER_OFFSET = 146 /* struct kvm_arm_counter_offset {uint64_t counter_offset;
                                       uint64_t reserved;}  KVM_ARM_SET_COUNTER_OFFSET */
} vmsnap_state;

/* The s390x PSW and prefix: no ioctl carries them; a VMM reads them from
 * kvm_run (psw_mask, psw_addr, s.regs.prefix) after KVM_RUN returns and
 * writes them there before the next. */
typedef struct vmsnap_s390_run_regs {
  uint64_t psw_mask;
  uint64_t psw_addr;
  uint32_t prefix;
  uint32_t reserved; /* zero */
} vmsnap_s390_run_regs;

/* One KVM device attribute and its value: struct kvm_device_attr with the
 * value in place of the address it points to. The value is as wide as the
 * group's registers (KVM_DEV_ARM_VGIC_GRP_ADDR and _CPU_SYSREGS and
 * _ITS_REGS 64 bits, the others 32 bits, zero-extended here). Lists come back
 * in the order a restore sets them, without the control group and without
 * the clear halves of set/clear register pairs (a restore clears those
 * before it sets). */
typedef struct vmsnap_device_attr {
  uint32_t flags; /* zero */
  uint32_t group;
  uint64_t attr;
  uint64_t value;
} vmsnap_device_attr;

/* What an x86 VMM set up on the VM before creating vCPUs; restore replays it
 * first. Not a kernel struct: it collects several ioctls. */
typedef struct vmsnap_x86_vm_config {
  uint64_t tss_addr;          /* KVM_SET_TSS_ADDR, 0: not set */
  uint64_t identity_map_addr; /* KVM_SET_IDENTITY_MAP_ADDR, 0: not set */
  uint32_t irqchip;           /* 1: KVM_CREATE_IRQCHIP */
  uint32_t pit;               /* 1: KVM_CREATE_PIT2 */
  uint32_t pit_flags;         /* kvm_pit_config.flags */
  uint32_t exception_payload; /* 1: KVM_CAP_EXCEPTION_PAYLOAD enabled */
  uint32_t reserved[8];       /* zero */
} vmsnap_x86_vm_config;

/* ---- Reading -------------------------------------------------------------
 * A vmsnap_snapshot is one file, or a file and its parents (an incremental
 * chain) seen as one. Every call on one handle may be made from several
 * threads at once (reads only), except vmsnap_close. */
typedef struct vmsnap_snapshot vmsnap_snapshot;

#define VMSNAP_OPEN_NO_PARENTS 1u /* open the file alone, even if it has a parent */

/* Opens PATH (and, unless VMSNAP_OPEN_NO_PARENTS, its parents, each checked
 * against the id the child recorded). Header, footer, manifest checksum and
 * every chunk's bounds are checked here; chunk checksums when a chunk is
 * read. Thread-safe. */
VMSNAP_API int vmsnap_open(const char *path, uint32_t flags, vmsnap_snapshot **out);
/* Frees the handle. NULL is fine. Not with other calls on the same handle. */
VMSNAP_API void vmsnap_close(vmsnap_snapshot *snap);

/* Checks every checksum of every layer and decodes every chunk.
 * VMSNAP_E_CORRUPT names the first bad chunk, its range and file offset. */
VMSNAP_API int vmsnap_verify(const vmsnap_snapshot *snap, vmsnap_progress_fn progress, void *ctx);

VMSNAP_API int vmsnap_arch_of(const vmsnap_snapshot *snap, vmsnap_arch *arch);
/* "x86_64", "s390x", "ppc64", "aarch64". */
VMSNAP_API const char *vmsnap_arch_name(vmsnap_arch arch);
VMSNAP_API int vmsnap_file_version(const vmsnap_snapshot *snap, uint16_t *major, uint16_t *minor);

/* Who wrote the snapshot. Strings stay valid until vmsnap_close. */
typedef struct vmsnap_creator {
  const char *tool_version;
  const char *host_kernel;
  const char *host_cpu;
  const char *host_name;
  int64_t time_unix_ns;
} vmsnap_creator;
VMSNAP_API int vmsnap_creator_of(const vmsnap_snapshot *snap, vmsnap_creator *out);

/* Layers in the chain (1 for a full snapshot) and the leaf's snapshot id
 * (16 bytes, the XXH3-128 of its manifest). */
VMSNAP_API int vmsnap_layer_count(const vmsnap_snapshot *snap, uint32_t *count);
VMSNAP_API int vmsnap_snapshot_id(const vmsnap_snapshot *snap, uint8_t id[16]);

VMSNAP_API int vmsnap_vcpu_count(const vmsnap_snapshot *snap, uint32_t *count);

/* One piece of a vCPU's (vmsnap_vcpu_state) or the VM's (vmsnap_vm_state)
 * state into BUF of BUF_SIZE bytes. *SIZE (may be NULL) receives the piece's
 * size; with a BUF too small (or NULL) the call returns
 * VMSNAP_E_BUFFER_TOO_SMALL and only sets *SIZE. VMSNAP_E_NOT_FOUND: the
 * snapshot does not hold that piece (e.g. no XSAVE area). */
VMSNAP_API int vmsnap_vcpu_state(const vmsnap_snapshot *snap, uint32_t vcpu, vmsnap_state what,
                                 void *buf, size_t buf_size, size_t *size);
VMSNAP_API int vmsnap_vm_state(const vmsnap_snapshot *snap, vmsnap_state what, void *buf,
                               size_t buf_size, size_t *size);

/* Memory regions of the leaf's memory map. REGION's strings stay valid until
 * vmsnap_close; host is NULL. */
VMSNAP_API int vmsnap_region_count(const vmsnap_snapshot *snap, uint32_t *count);
VMSNAP_API int vmsnap_region_at(const vmsnap_snapshot *snap, uint32_t index, vmsnap_region *region);
VMSNAP_API int vmsnap_page_size(const vmsnap_snapshot *snap, uint32_t *page_size);

/* Guest-physical [gpa, gpa+len) as of the leaf into OUT. Pages no region
 * covers read as zero. Each chunk used is checked first. */
VMSNAP_API int vmsnap_read_memory(const vmsnap_snapshot *snap, uint64_t gpa, void *out, uint64_t len);

/* Calls FN once per page that holds data (stored, not zero), in ascending
 * guest-physical order, as of the leaf. FN returns 0 to go on, anything else
 * to stop (vmsnap_for_each_page then returns VMSNAP_OK). No chunk is read. */
typedef int (*vmsnap_page_fn)(uint64_t gpa, void *ctx);
VMSNAP_API int vmsnap_for_each_page(const vmsnap_snapshot *snap, vmsnap_page_fn fn, void *ctx);

/* Device records the embedding VMM stored (opaque to vmsnap). The data
 * pointer stays valid until vmsnap_close. */
VMSNAP_API int vmsnap_device_count(const vmsnap_snapshot *snap, uint32_t *count);
VMSNAP_API int vmsnap_device_at(const vmsnap_snapshot *snap, uint32_t index, const char **name,
                                uint32_t *version, const void **data, size_t *size);
/* The record named NAME; VMSNAP_E_NOT_FOUND if there is none. */
VMSNAP_API int vmsnap_device_find(const vmsnap_snapshot *snap, const char *name, uint32_t *version,
                                  const void **data, size_t *size);

/* ---- Writing -------------------------------------------------------------
 * A writer writes to a temporary file beside PATH; only a successful
 * vmsnap_writer_commit makes PATH appear (fsync, then an atomic rename, then
 * an fsync of the directory). vmsnap_writer_free without a commit, or a
 * failed commit, removes the temporary file: an existing file at PATH is
 * never damaged. A writer is used from one thread at a time. */
typedef struct vmsnap_writer vmsnap_writer;

typedef struct vmsnap_write_options {
  uint32_t struct_size;        /* sizeof(vmsnap_write_options) */
  const char *compression;     /* "auto", "zstd", "zstd:LEVEL", "none"; NULL: "zstd:3" */
  uint32_t threads;            /* compression threads; 0: one per core */
  const char *tool_version;    /* recorded as the creator; NULL: "libvmsnap VERSION" */
  vmsnap_progress_fn progress; /* may be NULL; runs on the writer's I/O thread */
  void *progress_ctx;
  uint64_t progress_total;     /* bytes of memory that will be added, for progress */
} vmsnap_write_options;

/* OPTIONS may be NULL (defaults). The architecture is fixed at creation. */
VMSNAP_API int vmsnap_writer_create(const char *path, vmsnap_arch arch,
                                    const vmsnap_write_options *options, vmsnap_writer **out);
/* Removes the temporary file unless committed; frees. NULL is fine. */
VMSNAP_API void vmsnap_writer_free(vmsnap_writer *w);

/* Sets one piece of vCPU VCPU's state (vCPUs are numbered 0..n-1 and every
 * number below the highest used must have state) or of the VM's, from the
 * same layouts vmsnap_vcpu_state returns. x86_64 needs at least MP_STATE,
 * REGS, SREGS or SREGS2, LAPIC and CPUID per vCPU and CLOCK per VM.
 * s390x needs every per-vCPU piece (REGS, SREGS, FPU, MP_STATE, RUN_REGS,
 * ONE_REGS) and TOD per VM; ppc64 REGS and SREGS per vCPU (ONE_REGS
 * optional) and HTAB per VM; aarch64 VCPU_INIT, MP_STATE, EVENTS and
 * ONE_REGS (with MPIDR_EL1 when the VM has a vGIC) per vCPU. What is
 * missing is named by vmsnap_writer_commit. */
VMSNAP_API int vmsnap_writer_set_vcpu_state(vmsnap_writer *w, uint32_t vcpu, vmsnap_state what,
                                            const void *buf, size_t size);
VMSNAP_API int vmsnap_writer_set_vm_state(vmsnap_writer *w, vmsnap_state what, const void *buf,
                                          size_t size);

/* Adds a memory region and its content from REGION->host, read before the
 * call returns or (with compression threads) before commit; keep it
 * unchanged until then. Regions must be added in ascending guest-physical
 * order and must not overlap. Zero pages are detected and not stored. */
VMSNAP_API int vmsnap_writer_add_region(vmsnap_writer *w, const vmsnap_region *region);
/* As vmsnap_writer_add_region, for an incremental snapshot (after
 * vmsnap_writer_set_parent): only pages whose bit is set in DIRTY (one bit
 * per page of the region, LSB first) are stored; the others are the
 * parent's. */
VMSNAP_API int vmsnap_writer_add_region_pages(vmsnap_writer *w, const vmsnap_region *region,
                                              const uint8_t *dirty);

/* Names PARENT_PATH (which must exist and be readable) as this snapshot's
 * parent, by its snapshot id; its path is recorded relative to the new
 * file's directory. Call before adding memory. */
VMSNAP_API int vmsnap_writer_set_parent(vmsnap_writer *w, const char *parent_path);

/* A record of the embedding VMM's own device state (e.g. virtio queues),
 * stored as bytes and returned by vmsnap_device_find. Names are unique. */
VMSNAP_API int vmsnap_writer_add_device(vmsnap_writer *w, const char *name, uint32_t version,
                                        const void *data, size_t size);

/* Writes the manifest and footer, fsyncs, renames into place. After it (or
 * a failure) only vmsnap_writer_free may be called. */
VMSNAP_API int vmsnap_writer_commit(vmsnap_writer *w);

/* ---- KVM helpers (x86_64 hosts) -----------------------------------------
 * For a VMM that owns its VM and vCPU fds: vmsnap borrows them (never
 * closes them) and issues the ioctls. A vmsnap_vm is used from one thread
 * at a time; capture and restore need every vCPU outside KVM_RUN (after an
 * `in` exit, re-enter KVM_RUN once with immediate_exit = 1 first, so the
 * instruction completes).
 *
 * Restore order, enforced (each call fails with VMSNAP_E_INVALID_ARGUMENT
 * when made too early or too late):
 *   vmsnap_vm_restore_check    optional: checks only, nothing is changed
 *   vmsnap_vm_restore_config   before any vCPU exists
 *   vmsnap_vm_add_memory       one call per region of the snapshot (may
 *                              also come before vmsnap_vm_restore_config)
 *   vmsnap_vm_load_memory      eager, or lazy (userfaultfd)
 *   vmsnap_vm_add_vcpu         one per vCPU of the snapshot, fresh from KVM_CREATE_VCPU
 *   vmsnap_vm_restore_state    every vCPU, then the VM state
 * and for a fresh boot:
 *   vmsnap_vm_configure, vmsnap_vm_add_memory, vmsnap_vm_add_vcpu;
 * and for a warm VM, made before its snapshot is known:
 *   vmsnap_vm_configure, vmsnap_vm_add_memory, vmsnap_vm_add_vcpu,
 *   vmsnap_vm_prepare_warm; later vmsnap_vm_restore_check (which checks the
 *   snapshot fits), vmsnap_vm_restore_config, vmsnap_vm_load_memory,
 *   vmsnap_vm_restore_state. */
typedef struct vmsnap_vm vmsnap_vm;

/* Borrows VM_FD; opens /dev/kvm for the system-wide queries. */
VMSNAP_API int vmsnap_vm_attach(int vm_fd, vmsnap_vm **out);
VMSNAP_API void vmsnap_vm_free(vmsnap_vm *vm);

/* A fresh VM: applies CONFIG (TSS, identity map, irqchip, PIT, exception
 * payloads) and remembers it for capture. Before any vCPU. */
VMSNAP_API int vmsnap_vm_configure(vmsnap_vm *vm, const vmsnap_x86_vm_config *config);

/* Registers REGION with KVM_SET_USER_MEMORY_REGION and remembers it for
 * capture and restore. For a lazy load, REGION->host must be private
 * anonymous memory that was never touched. REGION->flags may hold
 * KVM_MEM_LOG_DIRTY_PAGES for a VMM that tracks dirty pages itself; a
 * capture records the region without it. */
VMSNAP_API int vmsnap_vm_add_memory(vmsnap_vm *vm, const vmsnap_region *region);

/* Borrows a vCPU fd created with KVM_CREATE_VCPU(INDEX). */
VMSNAP_API int vmsnap_vm_add_vcpu(vmsnap_vm *vm, uint32_t index, int vcpu_fd);

/* Captures every vCPU's and the VM's state and all guest memory into W
 * (device records are the caller's to add). With dirty tracking running and
 * a parent set on W, only the pages written since tracking started or the
 * last successful capture go in. Every vCPU must be outside KVM_RUN. */
VMSNAP_API int vmsnap_vm_capture(vmsnap_vm *vm, vmsnap_writer *w);

/* One entry of a VM's load history (the starts that led to the VM a
 * snapshot holds: a boot, then each load), oldest first; stored as the
 * device record "vmsnap.loads" (docs/format.md, "Load history"). */
typedef struct vmsnap_load_record {
  uint8_t generation_id[16];  /* what the start gave the guest */
  uint8_t snapshot_id[16];    /* the snapshot loaded; zero for a boot */
  uint32_t booted;            /* 1: a boot (snapshot_id unused) */
  uint32_t warm;              /* 1: started in a warm VM */
  int64_t time_unix_ns;
} vmsnap_load_record;

typedef void (*vmsnap_vm_fn)(void *ctx);

/* vmsnap_save_options.flags (since 0.3) */
/* Incremental on the VM's last snapshot (the last one vmsnap_vm_save wrote,
 * or the one the VM was restored from): only pages written since go in.
 * Full when there is none. Needs dirty tracking. */
#define VMSNAP_SAVE_INCREMENTAL 1u
/* Live (pre-copy): memory is copied in rounds while the vCPUs run, then
 * pause is called once for a short final round and resume before the file
 * is written. Needs dirty tracking and both callbacks. */
#define VMSNAP_SAVE_LIVE 2u

typedef struct vmsnap_save_options {
  uint32_t struct_size;       /* sizeof(vmsnap_save_options) */
  uint32_t flags;             /* VMSNAP_SAVE_* */
  const char *compression;    /* "auto", "zstd", "zstd:LEVEL", "none"; NULL: "zstd:3" */
  const char *tool_version;   /* recorded as the creator; NULL: "libvmsnap VERSION" */
  /* Non-NULL: incremental on this file, which must be the VM's last
   * snapshot (as VMSNAP_SAVE_INCREMENTAL, but naming it). */
  const char *parent;
  vmsnap_progress_fn progress; /* may be NULL; runs on the writer's I/O thread */
  void *progress_ctx;
  /* Live: pause returns once every vCPU is outside KVM_RUN; resume lets
   * them run again. Called from the calling thread. */
  vmsnap_vm_fn pause;
  vmsnap_vm_fn resume;
  void *pause_ctx;
  uint64_t pause_ns;          /* paused saves: how long the vCPUs were paused, recorded */
  const vmsnap_load_record *loads; /* the VM's load history, oldest first; may be NULL */
  uint32_t load_count;
  uint32_t reserved;          /* zero */
} vmsnap_save_options;

typedef struct vmsnap_save_result {
  uint32_t struct_size;       /* sizeof(vmsnap_save_result), set by the caller */
  uint32_t rounds;            /* memory copy rounds (1 unless live) */
  uint64_t file_size;
  uint64_t pause_ns;          /* live: how long the vCPUs were paused */
  uint8_t id[16];             /* the new snapshot's id */
} vmsnap_save_result;

/* Writes a snapshot of the VM to PATH in one call: every vCPU's and the
 * VM's state and its memory (only the pages written since the last
 * snapshot for an incremental one), atomically as vmsnap_writer_commit
 * does. Unless live, every vCPU must be outside KVM_RUN. RESULT may be
 * NULL. On success the file is the VM's last snapshot. Since 0.3. */
VMSNAP_API int vmsnap_vm_save(vmsnap_vm *vm, const char *path, const vmsnap_save_options *options,
                              vmsnap_save_result *result);

/* Checks that SNAP is an x86_64 snapshot this host can run, then replays its
 * VM configuration. Before any vCPU; memory may be added before or after
 * (on some hosts the first memory slot added after the irqchip exists is
 * slow, so adding it first is faster). SNAP must outlive VM. After
 * vmsnap_vm_restore_check with SNAP, only the configuration step is left;
 * on a warm VM (vmsnap_vm_prepare_warm) nothing is applied: the VM's own
 * configuration was checked to be the snapshot's. */
VMSNAP_API int vmsnap_vm_restore_config(vmsnap_vm *vm, const vmsnap_snapshot *snap);

/* vmsnap_restore_options.flags (since 0.3) */
/* Replay the snapshot's dirty-logging set-up too (the dirty ring and its
 * size, manual protection), for a VMM that does not enable dirty tracking
 * itself; by default a restored VM has none. */
#define VMSNAP_RESTORE_REPLAY_DIRTY_LOGGING 1u

typedef struct vmsnap_restore_options {
  uint32_t struct_size; /* sizeof(vmsnap_restore_options) */
  uint32_t flags;       /* VMSNAP_RESTORE_* */
} vmsnap_restore_options;

/* The first step of a restore, before anything of the VM is changed: checks
 * SNAP (architecture, VM state, vCPU ids, memory map) and what this host
 * must provide for it, and, on a warm VM, that SNAP fits it
 * (vmsnap_vm_check_fit). OPTIONS may be NULL. Then vmsnap_vm_restore_config.
 * Since 0.3. */
VMSNAP_API int vmsnap_vm_restore_check(vmsnap_vm *vm, const vmsnap_snapshot *snap,
                                       const vmsnap_restore_options *options);

/* Makes VM a warm VM: one configured (vmsnap_vm_configure), with every
 * memory region and vCPU added, that never ran and waits for a snapshot not
 * known yet. The host's CPUID is found now, so the restore makes no query
 * then. A snapshot restores into it only if it fits (vmsnap_vm_check_fit);
 * its memory is then loaded with the vCPUs already added, the order being
 * otherwise the same. Since 0.3. */
VMSNAP_API int vmsnap_vm_prepare_warm(vmsnap_vm *vm);

/* Arms the lazy pager of a warm VM (vmsnap_vm_prepare_warm) before its
 * snapshot is known: its memory is registered with userfaultfd and the
 * pager's threads are started and their memory made, so that a later lazy
 * vmsnap_vm_load_memory only hands the pager its snapshot. Nothing may touch
 * the VM's memory until that load (a touch waits for it). A load that does
 * not page the memory in (eager, or the file or an image mapped) disarms the
 * pager first, and so does vmsnap_vm_free. VMSNAP_E_UNSUPPORTED when
 * userfaultfd is not available. Since 0.3. */
VMSNAP_API int vmsnap_vm_arm_pager(vmsnap_vm *vm);

/* Whether SNAP can be restored into the warm VM: the same vCPU count,
 * memory regions (slot, address, size, flags) and VM configuration.
 * VMSNAP_E_UNSUPPORTED with the reason as the last error ("it has 2 vCPUs,
 * the VM 1") when not. Thread-safe with respect to other readers of SNAP.
 * Since 0.3. */
VMSNAP_API int vmsnap_vm_check_fit(const vmsnap_vm *vm, const vmsnap_snapshot *snap);

typedef enum vmsnap_memory_mode {
  VMSNAP_MEMORY_EAGER = 0, /* every page copied before the call returns */
  VMSNAP_MEMORY_LAZY = 1   /* pages served on first touch through userfaultfd */
} vmsnap_memory_mode;

typedef struct vmsnap_pager vmsnap_pager;
/* Called once, from a pager thread, with the first error of a lazy load
 * (a corrupt chunk, a failed userfaultfd call): the VMM must stop its vCPUs;
 * a thread that touches a page that could not be filled stays blocked. */
typedef void (*vmsnap_pager_error_fn)(int status, const char *message, void *ctx);

/* Makes the stored bytes of chunk CHUNK of layer LAYER (0: the chain's
 * base) readable in that layer's file, for a snapshot whose file is filled on
 * demand (e.g. a local cache of a remote store). Called before every read of
 * a chunk, from several pager threads at once. Returns VMSNAP_OK, or a status
 * with a one-line reason written to MESSAGE (MESSAGE_SIZE bytes, NUL
 * terminated); the chunk then fails as a checksum mismatch would. */
typedef int (*vmsnap_fetch_fn)(uint32_t layer, uint64_t chunk, char *message, size_t message_size, void *ctx);

/* vmsnap_load_options.flags (lazy only; since 0.3) */
/* A snapshot whose memory is one layer stored raw and page-aligned is mapped
 * copy-on-write from its file over the regions (MAP_PRIVATE | MAP_FIXED at
 * the same host addresses) instead of being paged in: every VM loaded from
 * that file shares its page cache until it writes. The file is verified
 * first (every checksum), or found verified in verified_dir. The regions
 * must be mappings the caller may have replaced (it unmaps them as before). */
#define VMSNAP_LOAD_MAP_FILE 1u
/* With image_dir: build a decompressed image there first when the snapshot
 * cannot be mapped itself (compressed, a chain) and has no fresh image. */
#define VMSNAP_LOAD_BUILD_IMAGE 2u
/* Lazy, paged in: the pager serves faults (and first_pages) but fills
 * nothing in the background until vmsnap_pager_release, for a VM restored
 * ahead of its start that should hold only the pages it touched. */
#define VMSNAP_LOAD_HOLD_FILL 4u
/* Lazy, paged in: after first_pages, the pager also fills the pages each
 * vCPU of the snapshot resumes on (the page of the instruction it runs
 * next, that of the top of its stack, and the page tables that map them;
 * x86_64 and aarch64), found by walking the guest's page tables over pages
 * it has filled itself. The guest's first instructions then find their
 * pages in instead of faulting; with VMSNAP_LOAD_HOLD_FILL, a VM restored
 * ahead holds them while it waits. A chunk that fails is reported through
 * on_error, as for a fault, and the walk goes on without it. */
#define VMSNAP_LOAD_START_PAGES 8u

typedef struct vmsnap_load_options {
  uint32_t struct_size;           /* sizeof(vmsnap_load_options) */
  vmsnap_memory_mode mode;
  uint32_t threads;               /* 0: one per core */
  vmsnap_pager_error_fn on_error; /* lazy only; may be NULL */
  void *on_error_ctx;
  vmsnap_progress_fn progress;    /* eager only; may be NULL */
  void *progress_ctx;
  /* Since 0.3; a struct_size that ends above leaves them zero. Lazy only. */
  uint32_t flags;                 /* VMSNAP_LOAD_* */
  uint32_t reserved;              /* zero */
  /* A directory where files verified for VMSNAP_LOAD_MAP_FILE are
   * remembered (by snapshot id, with the file's device, inode, size, mtime
   * and ctime), so an unchanged file is not verified again. NULL: verify on
   * every load. */
  const char *verified_dir;
  /* A directory of decompressed images (one file per snapshot id, with a
   * stamp checked against the snapshot before use): a snapshot with a fresh
   * image there is mapped from it copy-on-write. NULL: none. */
  const char *image_dir;
  vmsnap_fetch_fn fetch;          /* NULL: every chunk is in the file already */
  void *fetch_ctx;
  /* Guest-physical addresses whose pages the pager fills first, as soon as
   * it has the snapshot and before it serves any fault: the pages the VMM
   * itself touches before the guest runs (a generation ID's, say), which
   * then come in while it restores the vCPUs instead of faulting on the
   * way to the guest's first instruction. Lazy only; NULL: none. Addresses
   * outside guest memory are ignored. Read during the call only. */
  const uint64_t *first_pages;
  uint32_t first_page_count;
  uint32_t reserved2;             /* zero */
} vmsnap_load_options;

/* Fills the regions added with vmsnap_vm_add_memory (they must match the
 * snapshot's memory map) from SNAP. Lazy: returns at once with *PAGER set;
 * the pager runs until every page is in or vmsnap_pager_stop (a load that
 * mapped the file or an image has no pager threads: vmsnap_pager_wait
 * returns at once). */
VMSNAP_API int vmsnap_vm_load_memory(vmsnap_vm *vm, const vmsnap_snapshot *snap,
                                     const vmsnap_load_options *options, vmsnap_pager **pager);
/* Blocks until every page is in (VMSNAP_OK) or the first error. Thread-safe. */
VMSNAP_API int vmsnap_pager_wait(vmsnap_pager *pager);
/* Lets the background fill of a load made with VMSNAP_LOAD_HOLD_FILL
 * begin; does nothing for any other pager. NULL is fine. */
VMSNAP_API void vmsnap_pager_release(vmsnap_pager *pager);
/* Stops the pager's threads and frees it; pages never filled become
 * inaccessible. Call before unmapping guest memory. NULL is fine. */
VMSNAP_API void vmsnap_pager_stop(vmsnap_pager *pager);

/* Restores every vCPU (CPUID, MP state, registers, XSAVE, debug registers,
 * LAPIC, MSRs, events: the order of docs/state-coverage.md), then the VM
 * state (PIT, clock, PIC, IOAPIC), then tells each vCPU it was paused
 * (KVM_KVMCLOCK_CTRL). Every vCPU of SNAP must have been added. If it
 * fails, a lazy load's pager is stopped (pages never filled become
 * inaccessible; vmsnap_pager_wait then fails): the VM must not run. */
VMSNAP_API int vmsnap_vm_restore_state(vmsnap_vm *vm, const vmsnap_snapshot *snap);

/* The part of vmsnap_vm_restore_state that means the same whenever the
 * guest starts, for a VMM that restores ahead of the start (a warm VM bound
 * to the snapshot it will most likely be asked for): the vCPU checks, then
 * each vCPU's CPUID, TSC rate, MP state, registers, XSAVE, XCRs and debug
 * registers. vmsnap_vm_restore_state then sets only the rest, whose timers
 * and clocks run from the moment they are set: each vCPU's LAPIC, MSRs
 * (the TSC and its deadline among them) and events, then the PIT, the
 * clock and the interrupt controllers, and KVM_KVMCLOCK_CTRL. The guest
 * sees the same state as after one vmsnap_vm_restore_state. Since 0.3. */
VMSNAP_API int vmsnap_vm_restore_untimed_state(vmsnap_vm *vm, const vmsnap_snapshot *snap);

/* Undoes a warm VM's restore begun with vmsnap_vm_restore_check but whose
 * state is not complete (at most vmsnap_vm_restore_untimed_state; nothing
 * when no restore was begun, or one failed in its first step), so that
 * another snapshot can be restored into it: the load's memory (copied, or
 * a file or image mapped) is replaced by untouched anonymous memory at the
 * same host addresses (MAP_FIXED, as the VMSNAP_LOAD_MAP_FILE rule allows),
 * and the VM waits as after vmsnap_vm_prepare_warm. Stop the load's pager
 * first (vmsnap_pager_stop). The vCPU state set so far is overwritten by
 * the next restore. An armed pager was used or disarmed by the load: arm
 * again if wanted. Since 0.3. */
VMSNAP_API int vmsnap_vm_restore_cancel(vmsnap_vm *vm);

typedef enum vmsnap_dirty_mode {
  VMSNAP_DIRTY_DEFAULT = 0, /* the ring when the host has it, else the bitmap */
  VMSNAP_DIRTY_BITMAP = 1,
  VMSNAP_DIRTY_RING = 2
} vmsnap_dirty_mode;

/* Sets up dirty tracking; before any vCPU or memory is added (the ring can
 * only be enabled then). Tracking starts with vmsnap_vm_dirty_start. */
VMSNAP_API int vmsnap_vm_dirty_enable(vmsnap_vm *vm, vmsnap_dirty_mode mode);
/* Arms every page: the current memory is the base of the next incremental
 * capture. After every region and vCPU is added. */
VMSNAP_API int vmsnap_vm_dirty_start(vmsnap_vm *vm);
VMSNAP_API int vmsnap_vm_dirty_stop(vmsnap_vm *vm);
/* Dirty ring: call from the vCPU's thread on KVM_EXIT_DIRTY_RING_FULL,
 * before KVM_RUN again. Thread-safe. */
VMSNAP_API int vmsnap_vm_dirty_ring_full(vmsnap_vm *vm, uint32_t vcpu_index);
/* A write the VMM itself made to guest memory (KVM does not see those).
 * Thread-safe. */
VMSNAP_API int vmsnap_vm_dirty_mark(vmsnap_vm *vm, uint64_t gpa, uint64_t len);

#ifdef __cplusplus
}
#endif

#if defined(__x86_64__) && defined(__linux__) && !defined(VMSNAP_NO_KVM_TYPES)
/* Typed forms for x86-64 hosts, over the kernel's own structs. */
#include <linux/kvm.h>
static inline int vmsnap_x86_get_regs(const vmsnap_snapshot *s, uint32_t vcpu, struct kvm_regs *r) {
  return vmsnap_vcpu_state(s, vcpu, VMSNAP_X86_REGS, r, sizeof *r, NULL);
}
static inline int vmsnap_x86_get_sregs(const vmsnap_snapshot *s, uint32_t vcpu, struct kvm_sregs *r) {
  return vmsnap_vcpu_state(s, vcpu, VMSNAP_X86_SREGS, r, sizeof *r, NULL);
}
static inline int vmsnap_x86_get_lapic(const vmsnap_snapshot *s, uint32_t vcpu, struct kvm_lapic_state *r) {
  return vmsnap_vcpu_state(s, vcpu, VMSNAP_X86_LAPIC, r, sizeof *r, NULL);
}
static inline int vmsnap_x86_set_regs(vmsnap_writer *w, uint32_t vcpu, const struct kvm_regs *r) {
  return vmsnap_writer_set_vcpu_state(w, vcpu, VMSNAP_X86_REGS, r, sizeof *r);
}
#endif

#endif /* VMSNAP_VMSNAP_H */
