/* kvm-hold READY: keeps one KVM VM, with an in-kernel irqchip and one never-run vCPU, open
 * until it is killed; creates the file READY once it holds them. L1's kernel turns static keys
 * on when its first VM (or local APIC) is made and off when the last one goes, patching its own
 * text each time; holding one VM for the whole box run keeps those keys on, so that L1 never
 * patches its text between two of the script's VMs (kvm-box/src/holder.rs says why that matters
 * under TCG). */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int fail(const char *what) {
    perror(what);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: kvm-hold READY\n");
        return 2;
    }
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        return fail("kvm-hold: opening /dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        return fail("kvm-hold: KVM_CREATE_VM");
    if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
        return fail("kvm-hold: KVM_CREATE_IRQCHIP");
    if (ioctl(vm, KVM_CREATE_VCPU, 0) < 0)
        return fail("kvm-hold: KVM_CREATE_VCPU");
    int ready = open(argv[1], O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (ready < 0)
        return fail("kvm-hold: creating the ready file");
    close(ready);
    for (;;)
        pause();
}
