"""The job sandbox's seccomp filter: system calls a job never needs are refused.

Bubblewrap loads a classic-BPF program from a file descriptor (``bwrap --seccomp FD``)
before it runs the job's command; every process of the sandbox inherits it, and it can
never be removed.  The program here:

1. kills the process if the call comes from another architecture's ABI than the one
   the filter was built for (the i386 ``int 0x80`` entry on x86-64, for example);
2. on x86-64, refuses the x32 ABI (numbers with bit 30 set);
3. refuses (``EPERM``) the calls in ``DENIED``: debugging and reading other processes
   (``ptrace``, ``process_vm_*``, ``kcmp``, ``pidfd_getfd``), mounting and namespaces
   (``mount``, ``unshare``, ``setns``, the new mount API, ``pivot_root``, ``chroot``),
   the kernel keyring (``keyctl``, ``add_key``, ``request_key``), ``bpf``,
   ``perf_event_open``, ``userfaultfd``, ``io_uring_*`` (whose operations bypass this
   filter), handles that open files by number (``open_by_handle_at``), kernel modules,
   ``kexec``, and the system's clock, swap, reboot, log and accounting;
4. refuses ``clone`` with any namespace flag (``CLONE_NEW*``), and answers ``clone3``
   with ``ENOSYS`` — its flags are in memory the filter cannot read, and the C library
   then falls back to ``clone``, which the filter can check;
5. allows everything else.

It is a deny-list of what a computation on a data frame never needs; the other walls
(namespaces, no capabilities, an unprivileged uid, read-only files, no network) stand
behind it.  Built by hand because the filter is short and a dependency (libseccomp) would
have to be installed for it; ``tests/sandbox/test_isolation.py`` calls each refused system
call inside a real sandbox and checks that it fails.
"""

from __future__ import annotations

import errno
import platform
import struct
from typing import Final

#: System calls refused with EPERM, by name.
DENIED: Final = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "unshare", "setns", "pivot_root", "chroot",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "open_by_handle_at", "name_to_handle_at",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "swapon", "swapoff", "reboot", "syslog", "acct",
    "settimeofday", "clock_settime", "adjtimex", "clock_adjtime",
)  # fmt: skip

#: Namespace flags refused in ``clone``'s first argument (CLONE_NEWNS … CLONE_NEWNET).
CLONE_NAMESPACES: Final = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
CLONE_NAMESPACES_ALL: Final = CLONE_NAMESPACES | 0x20000000 | 0x40000000 | 0x00000080

# System call numbers per architecture (Linux's unistd_64.h and asm-generic/unistd.h).
_X86_64: Final = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "pidfd_getfd": 438, "mount": 165, "umount2": 166, "unshare": 272, "setns": 308,
    "pivot_root": 155, "chroot": 161, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "move_mount": 429, "open_tree": 428, "mount_setattr": 442,
    "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321, "perf_event_open": 298,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_by_handle_at": 304, "name_to_handle_at": 303,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246,
    "kexec_file_load": 320, "swapon": 167, "swapoff": 168, "reboot": 169, "syslog": 103,
    "acct": 163, "settimeofday": 164, "clock_settime": 227, "adjtimex": 159,
    "clock_adjtime": 305, "clone": 56, "clone3": 435,
}  # fmt: skip
_AARCH64: Final = {
    "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
    "pidfd_getfd": 438, "mount": 40, "umount2": 39, "unshare": 97, "setns": 268,
    "pivot_root": 41, "chroot": 51, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "move_mount": 429, "open_tree": 428, "mount_setattr": 442,
    "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280, "perf_event_open": 241,
    "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_by_handle_at": 265, "name_to_handle_at": 264,
    "init_module": 105, "finit_module": 273, "delete_module": 106, "kexec_load": 104,
    "kexec_file_load": 294, "swapon": 224, "swapoff": 225, "reboot": 142, "syslog": 116,
    "acct": 89, "settimeofday": 170, "clock_settime": 112, "adjtimex": 171,
    "clock_adjtime": 266, "clone": 220, "clone3": 435,
}  # fmt: skip
#: machine name → (AUDIT_ARCH_* value, system call numbers, has the x32 ABI).
ARCHITECTURES: Final = {
    "x86_64": (0xC000003E, _X86_64, True),
    "aarch64": (0xC00000B7, _AARCH64, False),
}

# Classic BPF: opcodes, and the offsets of struct seccomp_data's fields.
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_NR, _ARCH, _ARG0_LOW = 0, 4, 16  # args[0]'s low 32 bits (little-endian)
_KILL_PROCESS, _ALLOW = 0x80000000, 0x7FFF0000
_X32_BIT: Final = 0x40000000


def _errno(code: int) -> int:
    return 0x00050000 | code  # SECCOMP_RET_ERRNO | errno


class SeccompUnavailable(Exception):
    """No filter is known for this machine's architecture."""


def numbers(machine: str | None = None) -> dict[str, int]:
    """The system call numbers of ``machine`` (default: this one) the filter refers to."""
    return dict(_architecture(machine)[1])


def _architecture(machine: str | None) -> tuple[int, dict[str, int], bool]:
    name = machine or platform.machine()
    if name not in ARCHITECTURES:
        raise SeccompUnavailable(
            f"the job sandbox has no seccomp filter for the {name} architecture "
            f"(known: {', '.join(ARCHITECTURES)})"
        )
    return ARCHITECTURES[name]


def program(machine: str | None = None) -> bytes:
    """The filter as bytes of ``struct sock_filter`` (what ``bwrap --seccomp`` reads)."""
    arch, table, x32 = _architecture(machine)
    # Instructions whose jumps name a label; offsets are resolved below.
    code: list[tuple[int, str | int, str | int, int]] = [
        (_LD_W_ABS, 0, 0, _ARCH),
        (_JEQ_K, "nr", 0, arch),
        (_RET_K, 0, 0, _KILL_PROCESS),
    ]
    labels = {"nr": len(code)}
    code.append((_LD_W_ABS, 0, 0, _NR))
    if x32:
        code.append((_JGE_K, "eperm", 0, _X32_BIT))
    code += [(_JEQ_K, "eperm", 0, table[name]) for name in DENIED]
    code += [
        (_JEQ_K, "enosys", 0, table["clone3"]),
        (_JEQ_K, "clone", 0, table["clone"]),
        (_RET_K, 0, 0, _ALLOW),
    ]
    labels["enosys"] = len(code)
    code.append((_RET_K, 0, 0, _errno(errno.ENOSYS)))
    labels["clone"] = len(code)
    code += [
        (_LD_W_ABS, 0, 0, _ARG0_LOW),
        (_JSET_K, "eperm", 0, CLONE_NAMESPACES_ALL),
        (_RET_K, 0, 0, _ALLOW),
    ]
    labels["eperm"] = len(code)
    code.append((_RET_K, 0, 0, _errno(errno.EPERM)))
    return b"".join(
        struct.pack("<HBBI", op, _offset(at, jt, labels), _offset(at, jf, labels), k)
        for at, (op, jt, jf, k) in enumerate(code)
    )


def _offset(position: int, target: str | int, labels: dict[str, int]) -> int:
    """A jump's offset: to a label, counted from the next instruction (0: fall through)."""
    if isinstance(target, int):
        return target
    offset = labels[target] - position - 1
    if not 0 <= offset <= 255:
        raise AssertionError(f"seccomp program: jump from {position} out of range")
    return offset
