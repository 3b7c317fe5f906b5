// exec-chain: the smallest static binary that exercises execve, for the benchmarks.
//
//   exec-chain 0                      exit 0 at once (the "small static binary" of the
//                                     fork+exec overhead loop)
//   exec-chain N [INTERVAL_NS [T0]]   execve itself N more times, then exit 0: N real execs
//                                     with no fork and no libc start-up in between. With
//                                     INTERVAL_NS > 0 the k-th exec happens no earlier than
//                                     T0 + k * INTERVAL_NS (CLOCK_MONOTONIC), so a chain holds a
//                                     fixed average rate (the event-drop test).
//
// No libc (-nostdlib -static): a glibc start-up costs more than the exec itself and would
// cap the exec rate far below what the event pipeline has to be tested at. Built by
// benches/driftguard.rs with the system C compiler; x86_64 and aarch64.

typedef unsigned long u64;

#if defined(__x86_64__)
#define SYS_execve 59
#define SYS_exit 60
#define SYS_clock_gettime 228
#define SYS_clock_nanosleep 230
static long sys4(long n, long a, long b, long c, long d) {
    long r;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
    return r;
}
__asm__(".globl _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call chain_main\n hlt\n");
#elif defined(__aarch64__)
#define SYS_execve 221
#define SYS_exit 93
#define SYS_clock_gettime 113
#define SYS_clock_nanosleep 115
static long sys4(long n, long a, long b, long c, long d) {
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
    return x0;
}
__asm__(".globl _start\n_start:\n mov x0, sp\n bl chain_main\n");
#else
#error "exec-chain: x86_64 or aarch64 only"
#endif

struct ts {
    long sec;
    long nsec;
};

static u64 parse(const char *s) {
    u64 v = 0;
    while (s && *s >= '0' && *s <= '9') v = v * 10 + (u64)(*s++ - '0');
    return v;
}

static char *fmt(u64 v, char *end) {
    *--end = 0;
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

static u64 now_ns(void) {
    struct ts t;
    sys4(SYS_clock_gettime, 1 /* CLOCK_MONOTONIC */, (long)&t, 0, 0);
    return (u64)t.sec * 1000000000ul + (u64)t.nsec;
}

__attribute__((noreturn, used)) void chain_main(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    u64 n = argc > 1 ? parse(argv[1]) : 0;
    if (n == 0) {
        sys4(SYS_exit, 0, 0, 0, 0);
        __builtin_unreachable();
    }
    u64 interval = argc > 2 ? parse(argv[2]) : 0;
    u64 t0 = argc > 3 ? parse(argv[3]) : 0;
    if (interval && !t0) t0 = now_ns();
    u64 due = t0 + interval; // the next exec's slot
    if (interval && now_ns() < due) {
        struct ts d = {(long)(due / 1000000000ul), (long)(due % 1000000000ul)};
        sys4(SYS_clock_nanosleep, 1, 1 /* TIMER_ABSTIME */, (long)&d, 0);
    }
    char b1[24], b2[24], b3[24];
    char *av[] = {argv[0], fmt(n - 1, b1 + 24), fmt(interval, b2 + 24), fmt(due, b3 + 24), 0};
    char *ev[] = {0};
    sys4(SYS_execve, (long)"/proc/self/exe", (long)av, (long)ev, 0);
    sys4(SYS_exit, 127, 0, 0, 0); // exec failed (or was denied)
    __builtin_unreachable();
}
