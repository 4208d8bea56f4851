/* SPDX-License-Identifier: MIT */
/* Saves through vmsnap_vm_save as an embedding VMM would: a live save while
 * the guest's vCPU keeps writing memory on its own thread (the library asks
 * the VMM to pause once, for the last round, and to resume), then an
 * incremental save on top of it; both files verify and hold the vCPU and
 * memory as they were at the pause.
 *   live_api_test WORK_DIR */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <vmsnap/vmsnap.h>

#include "expect.h"

#define RAM_SIZE (16u << 20)
#define CODE 0x1000u
#define COUNTER 0x2000u


static int vcpu_fd;
static struct kvm_run *run;
static pthread_t vcpu_thread;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int pause_wanted, parked, stopping, pauses;

static void kick(int sig) { (void)sig; }

/* The vCPU's thread: KVM_RUN until asked to park (immediate_exit and a
 * signal get it out of KVM_RUN), then wait there until resumed. */
static void *vcpu_main(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&mu);
    while (pause_wanted && !stopping) {
      parked = 1;
      pthread_cond_broadcast(&cv);
      pthread_cond_wait(&cv, &mu);
    }
    parked = 0;
    run->immediate_exit = 0;
    if (stopping) {
      pthread_mutex_unlock(&mu);
      return NULL;
    }
    pthread_mutex_unlock(&mu);
    if (ioctl(vcpu_fd, KVM_RUN, 0) < 0 && errno != EINTR) {
      perror("KVM_RUN");
      exit(1);
    }
    if (run->exit_reason == KVM_EXIT_DIRTY_RING_FULL) {
      /* Not reached with the bitmap this test asks for. */
      exit(1);
    }
  }
}

static void pause_vcpu(void *ctx) {
  (void)ctx;
  pthread_mutex_lock(&mu);
  pause_wanted = 1;
  ++pauses;
  run->immediate_exit = 1;
  pthread_kill(vcpu_thread, SIGUSR1);
  while (!parked) pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
}

static void resume_vcpu(void *ctx) {
  (void)ctx;
  pthread_mutex_lock(&mu);
  pause_wanted = 0;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
}

int main(int argc, char **argv) {
  /* 16-bit real mode at CODE: inc word [COUNTER]; jmp back. */
  static const uint8_t code[] = {0xff, 0x06, COUNTER & 0xff, COUNTER >> 8, 0xeb, 0xfa};
  char live_path[4096], inc_path[4096];
  int kvm, vmfd, mmap_size;
  uint8_t *ram;
  vmsnap_vm *vm = NULL;
  vmsnap_region region = {0, 0, 0, RAM_SIZE, NULL, "ram"};
  vmsnap_x86_vm_config config;
  struct kvm_sregs sregs;
  struct kvm_regs regs;
  struct sigaction sa;
  vmsnap_save_options o;
  vmsnap_save_result r;
  vmsnap_snapshot *snap = NULL;
  uint16_t counter_at_save = 0, in_file = 0;
  uint32_t layers = 0;
  int rc;

  if (argc != 2) {
    fprintf(stderr, "usage: live_api_test WORK_DIR\n");
    return 2;
  }
  snprintf(live_path, sizeof live_path, "%s/live.vmsnap", argv[1]);
  snprintf(inc_path, sizeof inc_path, "%s/inc.vmsnap", argv[1]);
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = kick; /* no SA_RESTART: KVM_RUN returns EINTR */
  sigaction(SIGUSR1, &sa, NULL);

  kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  vmfd = kvm >= 0 ? ioctl(kvm, KVM_CREATE_VM, 0) : -1;
  if (vmfd < 0 || vmsnap_vm_attach(vmfd, &vm) != VMSNAP_OK) {
    fprintf(stderr, "no KVM VM: %s\n", vmsnap_last_error());
    return 1;
  }
  /* Dirty tracking first: a live save copies what the guest wrote meanwhile. */
  EXPECT(vmsnap_vm_dirty_enable(vm, VMSNAP_DIRTY_BITMAP) == VMSNAP_OK, "dirty enable");
  ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  memcpy(ram + CODE, code, sizeof code);
  region.host = ram;
  EXPECT(vmsnap_vm_add_memory(vm, &region) == VMSNAP_OK, "add memory");
  memset(&config, 0, sizeof config);
  config.tss_addr = 0xfffbd000;
  config.irqchip = 1;
  config.pit = 1;
  EXPECT(vmsnap_vm_configure(vm, &config) == VMSNAP_OK, "configure");
  vcpu_fd = ioctl(vmfd, KVM_CREATE_VCPU, 0);
  mmap_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  run = mmap(NULL, (size_t)mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd, 0);
  EXPECT(vmsnap_vm_add_vcpu(vm, 0, vcpu_fd) == VMSNAP_OK, "add vCPU");
  ioctl(vcpu_fd, KVM_GET_SREGS, &sregs);
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  ioctl(vcpu_fd, KVM_SET_SREGS, &sregs);
  memset(&regs, 0, sizeof regs);
  regs.rip = CODE;
  regs.rflags = 2;
  ioctl(vcpu_fd, KVM_SET_REGS, &regs);
  EXPECT(vmsnap_vm_dirty_start(vm) == VMSNAP_OK, "dirty start");

  /* A live save needs its callbacks. */
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.flags = VMSNAP_SAVE_LIVE;
  rc = vmsnap_vm_save(vm, live_path, &o, NULL);
  EXPECT(rc == VMSNAP_E_INVALID_ARGUMENT && strstr(vmsnap_last_error(), "pause"), "live without callbacks: %d", rc);
  EXPECT(access(live_path, F_OK) != 0, "a refused save left a file");

  pthread_create(&vcpu_thread, NULL, vcpu_main, NULL);
  /* Let the guest count for a while first. */
  while (*(volatile uint16_t *)(ram + COUNTER) < 1000) usleep(1000);

  o.pause = pause_vcpu;
  o.resume = resume_vcpu;
  o.compression = "none";
  o.tool_version = "live_api_test";
  memset(&r, 0, sizeof r);
  r.struct_size = sizeof r;
  rc = vmsnap_vm_save(vm, live_path, &o, &r);
  EXPECT(rc == VMSNAP_OK, "live save: %d", rc);
  EXPECT(pauses == 1, "the VM was paused %d times, not once", pauses);
  EXPECT(r.rounds >= 2 && r.pause_ns > 0 && r.file_size > 0, "live result: %u rounds, %llu ns paused", r.rounds,
         (unsigned long long)r.pause_ns);
  /* The guest ran on after the save. */
  {
    uint16_t after = *(volatile uint16_t *)(ram + COUNTER);
    int waited = 0;
    while (*(volatile uint16_t *)(ram + COUNTER) == after && waited++ < 5000) usleep(1000);
    EXPECT(*(volatile uint16_t *)(ram + COUNTER) != after, "the guest did not run after the live save");
  }

  /* An incremental save on the live one, paused by the caller. */
  pause_vcpu(NULL);
  counter_at_save = *(volatile uint16_t *)(ram + COUNTER);
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.flags = VMSNAP_SAVE_INCREMENTAL;
  o.compression = "zstd:1";
  rc = vmsnap_vm_save(vm, inc_path, &o, NULL);
  EXPECT(rc == VMSNAP_OK, "incremental save: %d", rc);
  pthread_mutex_lock(&mu);
  stopping = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  pthread_join(vcpu_thread, NULL);

  /* Both files verify; the increment is a layer on the live save and holds
   * the counter and a RIP inside the loop. */
  EXPECT(vmsnap_open(live_path, 0, &snap) == VMSNAP_OK && vmsnap_verify(snap, NULL, NULL) == VMSNAP_OK,
         "live file verifies");
  vmsnap_close(snap);
  snap = NULL;
  EXPECT(vmsnap_open(inc_path, 0, &snap) == VMSNAP_OK && vmsnap_verify(snap, NULL, NULL) == VMSNAP_OK,
         "incremental file verifies");
  if (snap) {
    EXPECT(vmsnap_layer_count(snap, &layers) == VMSNAP_OK && layers == 2, "layers: %u", layers);
    EXPECT(vmsnap_read_memory(snap, COUNTER, &in_file, sizeof in_file) == VMSNAP_OK && in_file == counter_at_save,
           "counter in the file %u, at the save %u", in_file, counter_at_save);
    EXPECT(vmsnap_x86_get_regs(snap, 0, &regs) == VMSNAP_OK && regs.rip >= CODE && regs.rip < CODE + sizeof code,
           "RIP 0x%llx", (unsigned long long)regs.rip);
  }
  vmsnap_close(snap);
  vmsnap_vm_free(vm);
  close(vcpu_fd);
  close(vmfd);
  close(kvm);
  if (failures) fprintf(stderr, "%d failures\n", failures);
  return failures ? 1 : 0;
}
