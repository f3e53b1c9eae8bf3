/*
 * chars.h - byte-level character helpers shared by kvserve's parsers.
 *
 * Several parsers read hexadecimal digits out of untrusted text: HTTP chunk
 * sizes, GBNF and regex escapes (\xHH, \uHHHH), Jinja string escapes and
 * SentencePiece byte pieces (<0x0A>).  They all use this one definition, so
 * a digit means the same everywhere, whatever the C locale is.
 */
#ifndef KVS_CORE_CHARS_H
#define KVS_CORE_CHARS_H

/* The value of the hexadecimal digit c (0-9, a-f, A-F), or -1 when c is not
 * one (any int, EOF included). */
static inline int kvs_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
