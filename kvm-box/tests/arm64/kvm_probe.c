/* Proves an arm64 /dev/kvm: opens it, asks its API version, creates a VM and a vCPU, and
 * initialises the vCPU as the host's preferred target. Dynamically linked on purpose: the box
 * packs its libraries from the arm64 sysroot. */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <sys/ioctl.h>

static int fail(const char *what) {
    printf("%s failed: %s\n", what, strerror(errno));
    return 1;
}

int main(void) {
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        return fail("open /dev/kvm");
    printf("api %d\n", ioctl(kvm, KVM_GET_API_VERSION, 0));
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        return fail("KVM_CREATE_VM");
    printf("vm ok\n");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0)
        return fail("KVM_CREATE_VCPU");
    struct kvm_vcpu_init init;
    memset(&init, 0, sizeof init);
    if (ioctl(vm, KVM_ARM_PREFERRED_TARGET, &init) < 0)
        return fail("KVM_ARM_PREFERRED_TARGET");
    if (ioctl(vcpu, KVM_ARM_VCPU_INIT, &init) < 0)
        return fail("KVM_ARM_VCPU_INIT");
    printf("vcpu ok\n");
    return 0;
}
