/* Wine 8 has no bcryptprimitives.dll, but Rust's std (>= 1.78) imports ProcessPrng from it for
 * its random seeds, so every Rust .exe would die at load time (status c0000135). This DLL
 * exports ProcessPrng and forwards to SystemFunction036 (RtlGenRandom), which Wine has.
 * scripts/test-windows.sh builds it with mingw and copies it into the test prefix. */
#include <windows.h>

typedef BOOLEAN(WINAPI *rtl_gen_random_fn)(PVOID, ULONG);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    static rtl_gen_random_fn gen;
    if (!gen) {
        HMODULE advapi = LoadLibraryA("advapi32.dll");
        if (!advapi) return FALSE;
        gen = (rtl_gen_random_fn)GetProcAddress(advapi, "SystemFunction036");
        if (!gen) return FALSE;
    }
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!gen(data, chunk)) return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
