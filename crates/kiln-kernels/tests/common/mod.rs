//! CPU checks shared by the integration tests, made here independently of
//! `kiln_kernels`' own detection.

/// Whether this process can run AMX int8 tile instructions: CPUID reports
/// AMX-TILE and AMX-INT8 (leaf 7, subleaf 0, EDX bits 24 and 25), Linux
/// grants the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM = 0x1023,
/// XFEATURE_XTILEDATA = 18)`, system call 158) and XCR0 then has bits 17
/// and 18 set.
#[allow(dead_code)]
pub fn cpu_has_amx() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        use std::arch::asm;
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        #[allow(unused_unsafe)]
        let (max_leaf, edx, ecx1) = unsafe { (__cpuid(0).eax, __cpuid_count(7, 0).edx, __cpuid(1).ecx) };
        if max_leaf < 7 || edx >> 24 & 1 == 0 || edx >> 25 & 1 == 0 || ecx1 >> 27 & 1 == 0 {
            return false;
        }
        if !(std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni"))
        {
            return false;
        }
        let ret: i64;
        let xcr0: u32;
        // SAFETY: an integer-only system call, then XGETBV(0) (OSXSAVE is set).
        unsafe {
            asm!("syscall", inlateout("rax") 158i64 => ret, in("rdi") 0x1023u64, in("rsi") 18u64,
                lateout("rcx") _, lateout("r11") _, options(nostack));
            asm!("xgetbv", in("ecx") 0u32, out("eax") xcr0, out("edx") _, options(nomem, nostack));
        }
        ret == 0 && xcr0 >> 17 & 3 == 3
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}
