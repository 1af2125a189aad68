/* firmware_check.h - checks of the firmware data every kvmgdb boot leaves in
 * memory (the BIOS Data Area, the ACPI tables), shared by the 32-bit guests
 * (see README.md). Each check prints what it found on COM1 and returns its
 * number of failures. */
#ifndef KVMGDB_FIRMWARE_CHECK_H
#define KVMGDB_FIRMWARE_CHECK_H

#include "guest.h"

/* Prints the BDA's COM1 port, EBDA segment and base memory size. */
int check_bda(void);
/* The RSDP found as an OS looks for it: "RSD PTR " on a 16-byte boundary in
 * 0xe0000..0xfffff (ACPI 6.5, 5.2.5.1); 0 if there is none. */
const uint8_t *find_rsdp(void);
/* Checks the RSDP's checksums and walks the XSDT and RSDT: every table's
 * checksum, the MADT's enabled CPUs, the DSDT's \_S5 object. */
int check_acpi(const uint8_t *rsdp);
/* n bytes as two hex digits each, space-separated. */
void put_bytes(const uint8_t *p, uint32_t n);
/* The 8-bit sum of n bytes (0 for a valid ACPI checksum). */
uint8_t byte_sum(const uint8_t *p, uint32_t n);
/* True if the n bytes at a and b are equal. */
int bytes_equal(const void *a, const void *b, uint32_t n);

#endif
