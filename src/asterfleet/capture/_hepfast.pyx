# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The collector's compiled fast path: a batch of HEP packets → the rows of
its SIP messages, as PostgreSQL binary ``COPY`` tuples (or as Python tuples).

It is a second implementation of ``collector.packet_to_row`` (HEP walk,
``sip_index.sip_fields``, the row), kept byte for byte equal to it by a
hypothesis test. Whatever it is not sure about goes back to the Python path
untouched, as a whole packet: RTCP (HEP type 5), a compressed payload, text
that is not plain ASCII (Python's Unicode rules for whitespace and case
would apply), anything that is not ``bytes``. Those packets keep their
place in nothing but the returned list; the Python path decides them.

Every read is bounded by the length of the packet it reads from.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy

cdef extern from "sys/socket.h":
    ctypedef unsigned int socklen_t
    int AF_INET
    int AF_INET6

cdef extern from "sys/uio.h":
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "sys/socket.h":
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int recvmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags, void *timeout) nogil
    int MSG_DONTWAIT

cdef extern from "errno.h":
    int errno
    int EAGAIN
    int EWOULDBLOCK
    int EINTR

cdef extern from "string.h":
    char *strerror(int errnum)
    void *memmem(const void *haystack, size_t haystacklen, const void *needle, size_t needlelen)

cdef extern from "arpa/inet.h":
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)

#: The reasons a packet is rejected here, in the order of ``hep.REASONS``
#: (those the compiled path can decide).
REASON_NAMES = (
    "bad_magic", "truncated", "bad_length", "bad_chunk", "no_payload", "oversized",
    "not_sip", "bad_sip", "auth",
)

cdef enum:
    ROW = -2
    PUNT = -1
    R_BAD_MAGIC = 0
    R_TRUNCATED = 1
    R_BAD_LENGTH = 2
    R_BAD_CHUNK = 3
    R_NO_PAYLOAD = 4
    R_OVERSIZED = 5
    R_NOT_SIP = 6
    R_BAD_SIP = 7
    R_AUTH = 8
    N_REASONS = 9

cdef enum:
    MAX_HEAD = 16384
    MAX_PAYLOAD = 65535
    NFIELDS = 18
    SCRATCH = 65536 + 4 * 16384 + 1024

# Header ids of the lines the SIP index reads.
cdef enum:
    H_CALL_ID = 0
    H_I = 1
    H_TO = 2
    H_T = 3
    H_FROM = 4
    H_F = 5
    H_CSEQ = 6
    H_USER_AGENT = 7
    H_SERVER = 8
    N_HEADERS = 9

cdef int64_t DAY_US = 86400000000

#: The PostgreSQL binary COPY signature (header, flags, extension length).
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
#: The end-of-data marker of a binary COPY.
TRAILER = b"\xff\xff"


cdef struct View:
    const uint8_t *p
    Py_ssize_t n


cdef struct Buf:
    uint8_t *data
    Py_ssize_t len
    Py_ssize_t cap


cdef struct Parsed:
    uint32_t ints[19]
    const uint8_t *src
    int src_len
    const uint8_t *dst
    int dst_len
    const uint8_t *auth
    Py_ssize_t auth_len
    bint has_auth
    const uint8_t *corr
    Py_ssize_t corr_len
    const uint8_t *host
    Py_ssize_t host_len
    const uint8_t *payload
    Py_ssize_t payload_len
    bint zipped


cdef struct Row:
    # Text fields in COLUMNS order (n == -1: NULL), numbers apart.
    int64_t ts
    View src_ip
    uint32_t src_port
    View dst_ip
    uint32_t dst_port
    View transport
    uint32_t capture_id
    View capture_host
    View call_id
    View method
    bint has_status
    uint32_t status
    View cseq
    View from_user
    View to_user
    View user_agent
    View correlation_id
    View raw
    bint opens


cdef inline int buf_reserve(Buf *b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap
    cdef uint8_t *grown
    if b.len + extra <= b.cap:
        return 0
    cap = b.cap * 2 if b.cap else 65536
    while cap < b.len + extra:
        cap *= 2
    grown = <uint8_t *>realloc(b.data, cap)
    if grown == NULL:
        raise MemoryError()
    b.data = grown
    b.cap = cap
    return 0


cdef inline void put_u16(Buf *b, uint32_t v) noexcept:
    b.data[b.len] = (v >> 8) & 0xFF
    b.data[b.len + 1] = v & 0xFF
    b.len += 2


cdef inline void put_u32(Buf *b, uint32_t v) noexcept:
    b.data[b.len] = (v >> 24) & 0xFF
    b.data[b.len + 1] = (v >> 16) & 0xFF
    b.data[b.len + 2] = (v >> 8) & 0xFF
    b.data[b.len + 3] = v & 0xFF
    b.len += 4


cdef inline void put_u64(Buf *b, uint64_t v) noexcept:
    cdef int k
    for k in range(8):
        b.data[b.len + k] = (v >> (56 - 8 * k)) & 0xFF
    b.len += 8


cdef inline void put_text(Buf *b, View v) noexcept:
    # Room was reserved by the caller.
    if v.n < 0:
        put_u32(b, 0xFFFFFFFF)
        return
    put_u32(b, <uint32_t>v.n)
    if v.n:
        memcpy(b.data + b.len, v.p, v.n)
        b.len += v.n


cdef inline uint32_t be(const uint8_t *p, Py_ssize_t n) noexcept:
    cdef uint32_t v = 0
    cdef Py_ssize_t k
    for k in range(n):
        v = (v << 8) | p[k]
    return v


cdef inline bint str_space(uint8_t c) noexcept:
    # str.isspace() on an ASCII character.
    return (9 <= c <= 13) or (28 <= c <= 32)


cdef inline bint bytes_space(uint8_t c) noexcept:
    # bytes.isspace() (what bytes.strip() removes).
    return c == 32 or (9 <= c <= 13)


cdef inline bint ascii(const uint8_t *p, Py_ssize_t n) noexcept:
    cdef Py_ssize_t k
    for k in range(n):
        if p[k] >= 0x80:
            return False
    return True


cdef inline View str_strip(View v) noexcept:
    while v.n and str_space(v.p[0]):
        v.p += 1
        v.n -= 1
    while v.n and str_space(v.p[v.n - 1]):
        v.n -= 1
    return v


cdef inline Py_ssize_t find(View v, uint8_t c) noexcept:
    cdef const uint8_t *at = <const uint8_t *>memchr(v.p, c, v.n) if v.n else NULL
    return -1 if at == NULL else at - v.p


cdef inline View upto(View v, uint8_t c) noexcept:
    # value.split(c, 1)[0]
    cdef Py_ssize_t at = find(v, c)
    if at >= 0:
        v.n = at
    return v


cdef View uri_user(View value) noexcept:
    """sip_index.uri_user on an ASCII value."""
    cdef View uri, rest, scheme, empty
    cdef Py_ssize_t lt, gt, colon, at
    empty.p = value.p
    empty.n = 0
    lt = find(value, b'<')
    if lt >= 0:
        uri.p = value.p + lt + 1
        uri.n = value.n - lt - 1
        gt = find(uri, b'>')
        if gt >= 0:
            uri.n = gt
    else:
        uri = upto(value, b';')
    colon = find(uri, b':')
    if colon < 0:
        return empty
    rest.p = uri.p + colon + 1
    rest.n = uri.n - colon - 1
    at = find(rest, b'@')
    if at < 0:
        scheme.p = uri.p
        scheme.n = colon
        scheme = str_strip(scheme)
        if (scheme.n == 3 and (scheme.p[0] | 0x20) == b't' and (scheme.p[1] | 0x20) == b'e'
                and (scheme.p[2] | 0x20) == b'l'):
            return str_strip(upto(rest, b';'))
        return empty
    rest.n = at
    return str_strip(upto(upto(rest, b';'), b':'))


cdef inline uint8_t lower(uint8_t c) noexcept:
    return c + 32 if 65 <= c <= 90 else c


cdef int header_id(const uint8_t *name, Py_ssize_t n) noexcept:
    """The id of a lowered header name, or -1 (``name`` is already lowered)."""
    if n == 1:
        if name[0] == b'i':
            return H_I
        if name[0] == b't':
            return H_T
        if name[0] == b'f':
            return H_F
        return -1
    if n == 2:
        return H_TO if name[0] == b't' and name[1] == b'o' else -1
    if n == 4:
        if memcmp(name, b"from", 4) == 0:
            return H_FROM
        if memcmp(name, b"cseq", 4) == 0:
            return H_CSEQ
        return -1
    if n == 6:
        return H_SERVER if memcmp(name, b"server", 6) == 0 else -1
    if n == 7:
        return H_CALL_ID if memcmp(name, b"call-id", 7) == 0 else -1
    if n == 10:
        return H_USER_AGENT if memcmp(name, b"user-agent", 10) == 0 else -1
    return -1


cdef View header_value(const uint8_t *head, Py_ssize_t head_len, Py_ssize_t start) noexcept:
    cdef View v
    cdef const uint8_t *nl
    v.p = head + start
    v.n = head_len - start
    nl = <const uint8_t *>memchr(v.p, b'\n', v.n) if v.n else NULL
    if nl != NULL:
        v.n = nl - v.p
    while v.n and bytes_space(v.p[0]):
        v.p += 1
        v.n -= 1
    while v.n and bytes_space(v.p[v.n - 1]):
        v.n -= 1
    return v


cdef int parse_hep(const uint8_t *data, Py_ssize_t size, Parsed *out) noexcept:
    """Walk the chunks as hep.parse_hep does: ROW when they hold together,
    else the reason of the first fault."""
    cdef Py_ssize_t pos, clen, start, blen
    cdef uint32_t vendor, ctype
    cdef int k
    if size < 6:
        return R_TRUNCATED
    if not (data[0] == b'H' and data[1] == b'E' and data[2] == b'P' and data[3] == b'3'):
        return R_BAD_MAGIC
    if ((<Py_ssize_t>data[4] << 8) | data[5]) != size:
        return R_BAD_LENGTH
    for k in range(19):
        out.ints[k] = 0
    out.ints[1] = 2    # IP family: AF_INET
    out.ints[2] = 17   # IP protocol: UDP
    out.ints[11] = 1   # protocol type: SIP
    out.src_len = out.dst_len = 0
    out.has_auth = False
    out.auth_len = out.corr_len = out.host_len = 0
    out.auth = out.corr = out.host = NULL
    out.payload = NULL
    out.payload_len = 0
    out.zipped = False
    pos = 6
    while pos < size:
        if size - pos < 6:
            return R_TRUNCATED
        vendor = (<uint32_t>data[pos] << 8) | data[pos + 1]
        ctype = (<uint32_t>data[pos + 2] << 8) | data[pos + 3]
        clen = (<Py_ssize_t>data[pos + 4] << 8) | data[pos + 5]
        if clen < 6 or pos + clen > size:
            return R_BAD_LENGTH
        start = pos + 6
        blen = clen - 6
        pos += clen
        if vendor != 0:
            continue
        if ctype == 15:
            out.payload = data + start
            out.payload_len = blen
        elif ctype in (1, 2, 7, 8, 9, 10, 11, 12, 13, 18):
            if blen != 1 and blen != 2 and blen != 4:
                return R_BAD_CHUNK
            out.ints[ctype] = be(data + start, blen)
        elif 3 <= ctype <= 6:
            # IPv4 (3 source, 4 destination) or IPv6 (5, 6) address.
            if blen != (4 if ctype <= 4 else 16):
                return R_BAD_CHUNK
            if ctype == 3 or ctype == 5:
                out.src = data + start
                out.src_len = blen
            else:
                out.dst = data + start
                out.dst_len = blen
        elif ctype == 14:
            out.auth = data + start
            out.auth_len = blen
            out.has_auth = True
        elif ctype == 17:
            out.corr = data + start
            out.corr_len = blen
        elif ctype == 19:
            out.host = data + start
            out.host_len = blen
        elif ctype == 16:
            out.zipped = True
    return ROW


cdef Py_ssize_t text_into(const uint8_t *p, Py_ssize_t n, uint8_t *dst) noexcept:
    """hep._text on ASCII: NULs removed, then trailing whitespace."""
    cdef Py_ssize_t k, m = 0
    for k in range(n):
        if p[k]:
            dst[m] = p[k]
            m += 1
    while m and str_space(dst[m - 1]):
        m -= 1
    return m


cdef View address(const uint8_t *p, int n, uint8_t *dst) noexcept:
    cdef View v
    cdef int k, b
    v.p = dst
    v.n = 0
    if n == 4:
        # What inet_ntoa prints, without printf.
        for k in range(4):
            b = p[k]
            if b >= 100:
                dst[v.n] = 48 + b // 100
                v.n += 1
            if b >= 10:
                dst[v.n] = 48 + (b // 10) % 10
                v.n += 1
            dst[v.n] = 48 + b % 10
            v.n += 1
            if k < 3:
                dst[v.n] = 46
                v.n += 1
        return v
    elif n == 16:
        inet_ntop(AF_INET6, p, <char *>dst, 64)
    else:
        return v
    while dst[v.n]:
        v.n += 1
    return v


cdef int parse_packet(const uint8_t *data, Py_ssize_t size, const uint8_t *key,
                      Py_ssize_t key_len, bint check_auth, int64_t now_us,
                      uint8_t *scratch, Row *row) noexcept:
    """One packet → ``row`` (ROW), a reject reason, or PUNT."""
    cdef Parsed h
    cdef int rc, k, hid
    cdef Py_ssize_t n, m, i, head_len, nl, first_len, sp1, sp2, name_start, j
    cdef const uint8_t *head
    cdef const uint8_t *payload
    cdef const uint8_t *blank
    cdef uint8_t *out = scratch
    cdef uint8_t acc
    cdef Py_ssize_t exact[N_HEADERS]
    cdef Py_ssize_t spaced[N_HEADERS]
    cdef uint8_t name[10]
    cdef View call_id, to, frm, cseq, ua, v
    cdef bint gap
    rc = parse_hep(data, size, &h)
    if rc != ROW:
        return rc
    if check_auth:
        if h.has_auth:
            if not ascii(h.auth, h.auth_len):
                return PUNT
            n = text_into(h.auth, h.auth_len, out)
        else:
            n = 0
        acc = 0 if n == key_len else 1
        for i in range(n if n < key_len else key_len):
            acc |= out[i] ^ key[i]
        if acc:
            return R_AUTH
    if h.zipped:
        return PUNT
    if h.payload_len == 0:
        return R_NO_PAYLOAD
    if h.payload_len > MAX_PAYLOAD:
        return R_OVERSIZED
    if h.ints[11] == 5:
        return PUNT  # RTCP
    if h.ints[11] != 1:
        return R_NOT_SIP
    if not (ascii(h.corr, h.corr_len) and ascii(h.host, h.host_len)):
        return PUNT
    payload = h.payload
    n = h.payload_len
    # The head: up to the first blank line within MAX_HEAD bytes.
    m = n if n < MAX_HEAD else MAX_HEAD
    head_len = m
    blank = <const uint8_t *>memmem(payload, m, b"\r\n\r\n", 4)
    if blank != NULL:
        head_len = blank - payload
    head = payload
    if head_len and memchr(payload, 0, head_len) != NULL:
        j = 0
        for i in range(head_len):
            if payload[i]:
                out[j] = payload[i]
                j += 1
        head = out
        head_len = j
        out += j
    # The start line.
    nl = -1
    if head_len:
        v.p = head
        v.n = head_len
        nl = find(v, b'\n')
    first_len = head_len if nl < 0 else nl
    while first_len and head[first_len - 1] == 13:
        first_len -= 1
    row.has_status = False
    row.method.p = NULL
    row.method.n = -1
    if first_len >= 8 and memcmp(head, b"SIP/2.0 ", 8) == 0:
        if first_len < 11:
            return R_NOT_SIP
        for i in range(8, 11):
            if not (48 <= head[i] <= 57):
                return R_NOT_SIP
        if head[8] == 48:
            return R_NOT_SIP
        row.has_status = True
        row.status = (head[8] - 48) * 100 + (head[9] - 48) * 10 + (head[10] - 48)
    else:
        sp1 = sp2 = -1
        for i in range(first_len):
            if head[i] == 32:
                if sp1 < 0:
                    sp1 = i
                elif sp2 < 0:
                    sp2 = i
                else:
                    return R_NOT_SIP  # more than three parts
        if sp2 < 0 or sp1 == 0 or sp2 == sp1 + 1:
            return R_NOT_SIP
        if not (first_len - sp2 - 1 == 7 and memcmp(head + sp2 + 1, b"SIP/2.0", 7) == 0):
            return R_NOT_SIP
        for i in range(sp1):
            if not ((65 <= head[i] <= 90) or (97 <= head[i] <= 122)):
                return R_NOT_SIP
            out[i] = head[i] - 32 if head[i] >= 97 else head[i]
        row.method.p = out
        row.method.n = sp1
        out += sp1
    # Headers: the first line of each kind, exactly "name:" or spaced "name :".
    for k in range(N_HEADERS):
        exact[k] = -1
        spaced[k] = -1
    i = 0 if nl < 0 else nl
    while nl >= 0 and i < head_len:
        # head[i] is a newline.
        name_start = i + 1
        j = name_start
        while j < head_len and j - name_start < 11:
            if head[j] == 45 or (97 <= head[j] <= 122) or (65 <= head[j] <= 90):
                j += 1
            else:
                break
        m = j - name_start
        if 0 < m <= 10 and j < head_len:
            for k in range(m):
                name[k] = lower(head[name_start + k])
            hid = header_id(name, m)
            if hid >= 0:
                if head[j] == 58:  # ":"
                    if exact[hid] < 0:
                        exact[hid] = j + 1
                elif head[j] == 32 or head[j] == 9:
                    while j < head_len and (head[j] == 32 or head[j] == 9):
                        j += 1
                    if j < head_len and head[j] == 58 and spaced[hid] < 0:
                        spaced[hid] = j + 1
        v.p = head + i + 1
        v.n = head_len - i - 1
        m = find(v, b'\n')
        if m < 0:
            break
        i = i + 1 + m
    call_id = group(head, head_len, exact, spaced, H_CALL_ID, H_I)
    if call_id.n == 0:
        return R_BAD_SIP
    to = group(head, head_len, exact, spaced, H_TO, H_T)
    frm = group(head, head_len, exact, spaced, H_FROM, H_F)
    cseq = group(head, head_len, exact, spaced, H_CSEQ, -1)
    ua = group(head, head_len, exact, spaced, H_USER_AGENT, -1)
    if ua.n == 0:
        ua = group(head, head_len, exact, spaced, H_SERVER, -1)
    if not (ascii(call_id.p, call_id.n) and ascii(to.p, to.n) and ascii(frm.p, frm.n)
            and ascii(cseq.p, cseq.n) and ascii(ua.p, ua.n)):
        return PUNT
    # The row.
    row.ts = (<int64_t>h.ints[9]) * 1000000 + h.ints[10] if h.ints[9] else now_us
    row.src_ip = address(h.src, h.src_len, out)
    out += row.src_ip.n + 1
    row.dst_ip = address(h.dst, h.dst_len, out)
    out += row.dst_ip.n + 1
    row.src_port = h.ints[7] & 0xFFFF
    row.dst_port = h.ints[8] & 0xFFFF
    row.transport = transport(h.ints[2], out)
    out += row.transport.n
    row.capture_id = h.ints[12]
    row.capture_host.p = out
    row.capture_host.n = text_into(h.host, h.host_len, out)
    out += row.capture_host.n
    row.correlation_id.p = out
    row.correlation_id.n = text_into(h.corr, h.corr_len, out)
    out += row.correlation_id.n
    row.call_id = call_id
    # CSeq: " ".join(value.split())
    row.cseq.p = out
    m = 0
    gap = False
    for i in range(cseq.n):
        if str_space(cseq.p[i]):
            gap = m > 0
        else:
            if gap:
                out[m] = 32
                m += 1
                gap = False
            out[m] = cseq.p[i]
            m += 1
    row.cseq.n = m
    out += m
    row.from_user = uri_user(frm)
    row.to_user = uri_user(to)
    row.user_agent = ua
    row.raw.p = payload
    row.raw.n = n
    row.opens = row.method.n >= 0 and not in_dialog(row.method) and not has_tag(to)
    return ROW


cdef View group(const uint8_t *head, Py_ssize_t head_len, Py_ssize_t *exact,
                Py_ssize_t *spaced, int a, int b) noexcept:
    """sip_index._header for the names ``a`` then ``b`` (b < 0: none)."""
    cdef Py_ssize_t start = -1
    cdef View empty
    if exact[a] >= 0:
        start = exact[a]
    elif b >= 0 and exact[b] >= 0:
        start = exact[b]
    else:
        start = spaced[a]
        if b >= 0 and spaced[b] >= 0 and (start < 0 or spaced[b] < start):
            start = spaced[b]
    if start < 0:
        empty.p = head
        empty.n = 0
        return empty
    return header_value(head, head_len, start)


cdef bint in_dialog(View method) noexcept:
    cdef const uint8_t *p = method.p
    if method.n == 3:
        return memcmp(p, b"ACK", 3) == 0 or memcmp(p, b"BYE", 3) == 0
    if method.n == 4:
        return memcmp(p, b"INFO", 4) == 0
    if method.n == 5:
        return memcmp(p, b"PRACK", 5) == 0
    if method.n == 6:
        return memcmp(p, b"CANCEL", 6) == 0 or memcmp(p, b"UPDATE", 6) == 0
    return False


cdef bint has_tag(View to) noexcept:
    # ";tag=" in to.lower()
    cdef Py_ssize_t i
    for i in range(to.n - 4):
        if (to.p[i] == 59 and lower(to.p[i + 1]) == b't' and lower(to.p[i + 2]) == b'a'
                and lower(to.p[i + 3]) == b'g' and to.p[i + 4] == 61):
            return True
    return False


cdef View transport(uint32_t proto, uint8_t *dst) noexcept:
    cdef View v
    cdef uint8_t digits[12]
    cdef int k = 0
    v.p = dst
    if proto == 17:
        memcpy(dst, b"udp", 3)
        v.n = 3
    elif proto == 6:
        memcpy(dst, b"tcp", 3)
        v.n = 3
    elif proto == 132:
        memcpy(dst, b"sctp", 4)
        v.n = 4
    else:
        while True:
            digits[k] = 48 + proto % 10
            k += 1
            proto //= 10
            if proto == 0:
                break
        v.n = k
        while k:
            dst[v.n - k] = digits[k - 1]
            k -= 1
    return v


cdef int put_row(Buf *b, Row *r) except -1:
    buf_reserve(b, 2 + NFIELDS * 4 + 8 * 2 + 4 * 3 + 1 + r.src_ip.n + r.dst_ip.n
                + r.transport.n + r.capture_host.n + r.call_id.n
                + (r.method.n if r.method.n > 0 else 0) + r.cseq.n + r.from_user.n
                + r.to_user.n + r.user_agent.n + r.correlation_id.n + r.raw.n)
    put_u16(b, NFIELDS)
    put_u32(b, 8)
    put_u64(b, <uint64_t>r.ts)
    put_text(b, r.src_ip)
    put_u32(b, 4)
    put_u32(b, r.src_port)
    put_text(b, r.dst_ip)
    put_u32(b, 4)
    put_u32(b, r.dst_port)
    put_text(b, r.transport)
    put_u32(b, 8)
    put_u64(b, r.capture_id)
    put_text(b, r.capture_host)
    put_text(b, r.call_id)
    put_text(b, r.method)
    if r.has_status:
        put_u32(b, 4)
        put_u32(b, r.status)
    else:
        put_u32(b, 0xFFFFFFFF)
    put_text(b, r.cseq)
    put_text(b, r.from_user)
    put_text(b, r.to_user)
    put_text(b, r.user_agent)
    put_text(b, r.correlation_id)
    put_text(b, r.raw)
    put_u32(b, 1)
    b.data[b.len] = 1 if r.opens else 0
    b.len += 1
    return 0


cdef inline str text(View v):
    return PyUnicode_DecodeASCII(<const char *>v.p, v.n, NULL)


cdef tuple row_tuple(Row *r):
    return (
        r.ts,
        text(r.src_ip),
        r.src_port,
        text(r.dst_ip),
        r.dst_port,
        text(r.transport),
        r.capture_id,
        text(r.capture_host),
        text(r.call_id),
        text(r.method) if r.method.n >= 0 else None,
        r.status if r.has_status else None,
        text(r.cseq),
        text(r.from_user),
        text(r.to_user),
        text(r.user_agent),
        text(r.correlation_id),
        PyBytes_FromStringAndSize(<const char *>r.raw.p, r.raw.n),
        bool(r.opens),
    )


def frame_end(const uint8_t[::1] buf, Py_ssize_t start=0):
    """See the ``.pyi`` stub."""
    cdef Py_ssize_t n = buf.shape[0]
    cdef const uint8_t *p = &buf[0] if n else NULL
    cdef Py_ssize_t pos = start if start > 0 else 0, count = 0, total
    error = None
    while n - pos >= 6:
        if not (p[pos] == b'H' and p[pos + 1] == b'E' and p[pos + 2] == b'P' and p[pos + 3] == b'3'):
            error = "bad_magic"
            break
        total = (<Py_ssize_t>p[pos + 4] << 8) | p[pos + 5]
        if total < 6:
            error = "bad_length"
            break
        if n - pos < total:
            break
        pos += total
        count += 1
    return pos, count, error


cdef inline int take(const uint8_t *data, Py_ssize_t size, object packet, const uint8_t *key,
                     Py_ssize_t key_len, bint check_auth, int64_t now_us, uint8_t *scratch,
                     Row *row, bint binary, Buf *buf, list rows, list left, long *counts,
                     set days, int64_t *last_day) except -2:
    """Parse one packet into the batch's outputs; 1 when it became a row."""
    cdef int rc
    cdef int64_t day
    rc = parse_packet(data, size, key, key_len, check_auth, now_us, scratch, row)
    if rc == ROW:
        day = row.ts // DAY_US
        if day != last_day[0]:
            days.add(day)
            last_day[0] = day
        if binary:
            put_row(buf, row)
        else:
            rows.append(row_tuple(row))
        return 1
    if rc == PUNT:
        left.append(packet if packet is not None
                    else PyBytes_FromStringAndSize(<const char *>data, size))
    else:
        counts[rc] += 1
    return 0


def parse_packets(list packets, object auth_key, int64_t now_us, bint binary, bint framed=False):
    """See the ``.pyi`` stub."""
    cdef Buf buf
    cdef Row row
    cdef uint8_t *scratch
    cdef const uint8_t *key = NULL
    cdef Py_ssize_t key_len = 0
    cdef bint check_auth = auth_key is not None
    cdef long counts[N_REASONS]
    cdef Py_ssize_t stored = 0, size, pos, total
    cdef const uint8_t *data
    cdef int k
    cdef int64_t last_day = -1
    cdef list rows = []
    cdef list left = []
    cdef set days = set()
    cdef object packet
    if check_auth:
        if not PyBytes_CheckExact(auth_key):
            raise TypeError("auth_key must be bytes or None")
        key = <const uint8_t *>PyBytes_AS_STRING(auth_key)
        key_len = PyBytes_GET_SIZE(auth_key)
    for k in range(N_REASONS):
        counts[k] = 0
    buf.data = NULL
    buf.len = buf.cap = 0
    scratch = <uint8_t *>malloc(SCRATCH)
    if scratch == NULL:
        raise MemoryError()
    try:
        for packet in packets:
            if not PyBytes_CheckExact(packet):
                if framed:
                    raise TypeError("framed chunks must be bytes")
                left.append(packet)
                continue
            data = <const uint8_t *>PyBytes_AS_STRING(packet)
            size = PyBytes_GET_SIZE(packet)
            if not framed:
                stored += take(data, size, packet, key, key_len, check_auth, now_us, scratch,
                               &row, binary, &buf, rows, left, counts, days, &last_day)
                continue
            # A chunk of consecutive whole packets (the receiver framed them).
            pos = 0
            while pos < size:
                total = ((<Py_ssize_t>data[pos + 4] << 8) | data[pos + 5]) if size - pos >= 6 else 0
                if total < 6 or pos + total > size:
                    counts[R_BAD_LENGTH] += 1  # not a whole packet: the rest is lost
                    break
                stored += take(data + pos, total, None, key, key_len, check_auth, now_us,
                               scratch, &row, binary, &buf, rows, left, counts, days, &last_day)
                pos += total
        copy = PyBytes_FromStringAndSize(<const char *>buf.data, buf.len) if binary else b""
    finally:
        free(scratch)
        free(buf.data)
    rejected = {REASON_NAMES[k]: counts[k] for k in range(N_REASONS) if counts[k]}
    return copy, rows, stored, days, left, rejected


cdef class DatagramReceiver:
    """Reads up to ``batch`` UDP datagrams per system call (``recvmmsg``)."""

    cdef int fd
    cdef unsigned int batch
    cdef Py_ssize_t size
    cdef uint8_t *buf
    cdef iovec *iov
    cdef mmsghdr *msgs

    def __cinit__(self, int fd, unsigned int batch=256, Py_ssize_t size=65535):
        cdef unsigned int i
        self.fd = fd
        self.batch = batch
        self.size = size
        self.buf = <uint8_t *>malloc(batch * size)
        self.iov = <iovec *>malloc(batch * sizeof(iovec))
        self.msgs = <mmsghdr *>malloc(batch * sizeof(mmsghdr))
        if self.buf == NULL or self.iov == NULL or self.msgs == NULL:
            raise MemoryError()
        for i in range(batch):
            self.iov[i].iov_base = self.buf + i * size
            self.iov[i].iov_len = size
            self.msgs[i].msg_hdr.msg_name = NULL
            self.msgs[i].msg_hdr.msg_namelen = 0
            self.msgs[i].msg_hdr.msg_iov = &self.iov[i]
            self.msgs[i].msg_hdr.msg_iovlen = 1
            self.msgs[i].msg_hdr.msg_control = NULL
            self.msgs[i].msg_hdr.msg_controllen = 0
            self.msgs[i].msg_hdr.msg_flags = 0

    def __dealloc__(self):
        free(self.buf)
        free(self.iov)
        free(self.msgs)

    def receive(self):
        """See the ``.pyi`` stub."""
        cdef int n, i, err
        cdef Py_ssize_t total = 0, at = 0, length
        cdef const uint8_t *p
        cdef int count = 0
        cdef list odd = []
        with nogil:
            n = recvmmsg(self.fd, self.msgs, self.batch, MSG_DONTWAIT, NULL)
        if n < 0:
            err = errno
            if err == EAGAIN or err == EWOULDBLOCK or err == EINTR:
                return b"", 0, odd
            raise OSError(err, strerror(err).decode())
        for i in range(n):
            length = self.msgs[i].msg_len
            p = self.buf + i * self.size
            if length >= 6 and ((<Py_ssize_t>p[4] << 8) | p[5]) == length:
                total += length
                count += 1
        chunk = PyBytes_FromStringAndSize(NULL, total)
        out = <uint8_t *>PyBytes_AS_STRING(chunk)
        for i in range(n):
            length = self.msgs[i].msg_len
            p = self.buf + i * self.size
            if length >= 6 and ((<Py_ssize_t>p[4] << 8) | p[5]) == length:
                memcpy(out + at, p, length)
                at += length
            else:
                odd.append(PyBytes_FromStringAndSize(<const char *>p, length))
        return chunk, count, odd
