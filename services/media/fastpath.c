/* services.media._fastpath: the per-packet part of rtc_internals.RtpOut.send in compiled code.
 *
 * What it does, per subscriber and frame, is exactly what the Python reference in RtpOut.send does
 * (tests/media/test_fastpath.py compares the bytes): each source packet keeps its payload and gets the
 * sender's header (payload type and marker, sequence number and timestamp shifted into the sender's
 * spaces, abs-send-time patched), is kept as plain RTP in the sender's retransmission ring, is
 * SRTP-protected and goes to the socket of the nominated ICE pair: one sendto for one datagram, one
 * UDP GSO sendmsg for up to 32 datagrams of equal size (udp(7) UDP_SEGMENT), datagram by datagram
 * otherwise. What the socket does not take now (a full buffer, an error) is handed back, in order, for
 * asyncio's transport to queue or report, as the reference does.
 *
 * Why compiled: under py-spy at 1 room x 10 the Python loop around the work (header patching, byte
 * concatenation, the cffi call into libsrtp, the socket module's address parsing per sendto) cost more
 * than the encryption and the system calls themselves. No library does this for aiortc.
 *
 * SRTP: the sender's own libsrtp context, pylibsrtp's (aiortc's RTCDtlsTransport._tx_srtp), is used
 * through the srtp_protect function of the libsrtp pylibsrtp carries (its address, from cffi). So every
 * RTP packet of a sender's SSRC, ours and aiortc's retransmissions alike, goes through one context
 * (rollover counter and index stay right), the keys never leave pylibsrtp, and there is one libsrtp in
 * the process. rtc_internals.py takes both addresses; tests/media/test_aiortc_internals.py checks the
 * signature.
 *
 * Hostile input: every length is checked before a copy (headers, payloads, the ring's size); a packet
 * that does not fit the SRTP buffer is skipped (as the reference does), never truncated. The GIL is
 * held throughout, buffers are per call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#define SLOT 1500            /* pylibsrtp's session buffer: what libsrtp may write a protected packet into */
#define TRAILER 144          /* pylibsrtp.SRTP_MAX_TRAILER_LEN: room libsrtp needs after the plain packet */
#define MAX_PLAIN (SLOT - TRAILER)
#define MAX_HEADER 256       /* an RTP header with its extensions, as aiortc serialises a sender's */
#define GSO_MAX_SEGMENTS 32  /* forwarding.GSO_MAX_SEGMENTS: 32 x ~1.3 kB stays below the kernel's 64 KiB */
#define HISTORY 128          /* rtc_internals.RTP_HISTORY_SIZE */

/* libsrtp 2's srtp_protect(srtp_t, void *rtp_hdr, int *len_ptr), as pylibsrtp 1.0.0 declares it. */
typedef int (*protect_fn)(void *ctx, void *rtp, int *len);

typedef struct {
    PyObject_HEAD
    PyObject *sock;       /* the transport's socket (fileno() taken per call: -1 once closed), or None */
    PyObject *session;    /* the pylibsrtp Session: keeps the libsrtp context alive */
    protect_fn protect;
    void *context;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int gso;              /* 0 once the kernel refused UDP_SEGMENT on this route */
} Route;

static PyObject *s_sequence_number, *s_timestamp, *s_marker, *s_payload;

static int Route_init(Route *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"sock", "host", "port", "protect", "context", "session", NULL};
    PyObject *sock, *session;
    const char *host;
    int port;
    unsigned long long protect, context;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OsiKKO", kwlist, &sock, &host, &port, &protect, &context,
                                     &session))
        return -1;
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return -1;
    }
    if (!protect || !context) {
        PyErr_SetString(PyExc_ValueError, "protect and context must be addresses");
        return -1;
    }
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {0}, *found = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;  /* an address, never a name lookup */
    int rc = getaddrinfo(host, service, &hints, &found);
    if (rc != 0 || found == NULL || found->ai_addrlen > sizeof self->addr) {
        if (found) freeaddrinfo(found);
        PyErr_Format(PyExc_ValueError, "not a numeric address: %s", host);
        return -1;
    }
    memcpy(&self->addr, found->ai_addr, found->ai_addrlen);
    self->addrlen = (socklen_t)found->ai_addrlen;
    freeaddrinfo(found);
    Py_INCREF(sock);
    Py_XSETREF(self->sock, sock);
    Py_INCREF(session);
    Py_XSETREF(self->session, session);
    self->protect = (protect_fn)(uintptr_t)protect;
    self->context = (void *)(uintptr_t)context;
    self->gso = 1;
    return 0;
}

static void Route_dealloc(Route *self) {
    Py_CLEAR(self->sock);
    Py_CLEAR(self->session);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Route_get_gso(Route *self, void *closure) { return PyBool_FromLong(self->gso); }

static PyGetSetDef Route_getset[] = {
    {"gso", (getter)Route_get_gso, NULL, "False once the kernel refused UDP GSO on this route", NULL},
    {NULL},
};

static PyTypeObject RouteType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "services.media._fastpath.Route",
    .tp_doc = "Route(sock, host, port, protect, context, session): where and how one sender's packets go.",
    .tp_basicsize = sizeof(Route),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Route_init,
    .tp_dealloc = (destructor)Route_dealloc,
    .tp_getset = Route_getset,
};

/* An int attribute of a packet object, range-checked. */
static int get_uint(PyObject *packet, PyObject *name, unsigned long long max, unsigned long long *out) {
    PyObject *value = PyObject_GetAttr(packet, name);
    if (value == NULL) return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(value);
    Py_DECREF(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    if (v > max) {
        PyErr_Format(PyExc_ValueError, "packet %U out of range", name);
        return -1;
    }
    *out = v;
    return 0;
}

/* Hands datagrams [from, count) back as a list of bytes (for the transport); NULL on error. */
static PyObject *rest_of(const unsigned char *buffer, const int *lengths, int from, int count) {
    PyObject *rest = PyList_New(count - from);
    if (rest == NULL) return NULL;
    for (int i = from; i < count; i++) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)buffer + (size_t)i * SLOT, lengths[i]);
        if (b == NULL) {
            Py_DECREF(rest);
            return NULL;
        }
        PyList_SET_ITEM(rest, i - from, b);
    }
    return rest;
}

/* Sends datagrams [0, count) on fd; returns the index of the first one not sent. *refused is set
 * when the kernel refused GSO (the route then sends datagram by datagram). */
static int send_datagrams(Route *route, int fd, const unsigned char *buffer, const int *lengths, int count,
                          int *refused) {
    struct sockaddr *addr = (struct sockaddr *)&route->addr;
    if (count == 1)
        return sendto(fd, buffer, (size_t)lengths[0], 0, addr, route->addrlen) < 0 ? 0 : 1;
    int size = lengths[0], equal = lengths[count - 1] <= size;
    for (int i = 1; equal && i < count - 1; i++) equal = lengths[i] == size;
    int done = 0;
    if (route->gso && equal) {
        struct iovec iov[GSO_MAX_SEGMENTS];
        union {
            char buf[CMSG_SPACE(sizeof(uint16_t))];
            struct cmsghdr align;
        } control;
        while (done < count) {
            int n = count - done < GSO_MAX_SEGMENTS ? count - done : GSO_MAX_SEGMENTS;
            for (int i = 0; i < n; i++) {
                iov[i].iov_base = (void *)(buffer + (size_t)(done + i) * SLOT);
                iov[i].iov_len = (size_t)lengths[done + i];
            }
            struct msghdr msg = {0};
            msg.msg_name = addr;
            msg.msg_namelen = route->addrlen;
            msg.msg_iov = iov;
            msg.msg_iovlen = (size_t)n;
            msg.msg_control = control.buf;
            msg.msg_controllen = sizeof control.buf;
            struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
            cm->cmsg_level = SOL_UDP;
            cm->cmsg_type = UDP_SEGMENT;
            cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t segment = (uint16_t)size;
            memcpy(CMSG_DATA(cm), &segment, sizeof segment);
            if (sendmsg(fd, &msg, 0) < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    route->gso = 0;  /* e.g. EINVAL/EIO where the socket or route cannot segment */
                    *refused = 1;
                }
                return done;  /* the transport sends (or queues) the rest, one by one */
            }
            done += n;
        }
        return done;
    }
    for (; done < count; done++)
        if (sendto(fd, buffer + (size_t)done * SLOT, (size_t)lengths[done], 0, addr, route->addrlen) < 0)
            return done;
    return done;
}

/* send(route, header, at, abs_send_time, payload_type, first, sequence_offset, timestamp_offset,
 *      next_sequence, packets, ring, direct)
 *   -> (next_sequence, last_timestamp or -1, count, octets, wire_bytes, rest or None, gso_refused) */
static PyObject *fastpath_send(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "send() takes 12 arguments");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], &RouteType) || !PyBytes_Check(args[1]) || !PyList_Check(args[9]) ||
        !PyList_Check(args[10])) {
        PyErr_SetString(PyExc_TypeError, "send(Route, bytes, ..., list, list, bool)");
        return NULL;
    }
    Route *route = (Route *)args[0];
    const unsigned char *header = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    Py_ssize_t header_length = PyBytes_GET_SIZE(args[1]);
    long at = PyLong_AsLong(args[2]);
    unsigned long abs_send_time = PyLong_AsUnsignedLong(args[3]);
    long payload_type = PyLong_AsLong(args[4]);
    long first = PyLong_AsLong(args[5]);
    long sequence_offset = PyLong_AsLong(args[6]);
    unsigned long long timestamp_offset = PyLong_AsUnsignedLongLong(args[7]);
    long next_sequence = PyLong_AsLong(args[8]);
    PyObject *packets = args[9], *ring = args[10];
    int direct = PyObject_IsTrue(args[11]);
    if (PyErr_Occurred() || direct < 0) return NULL;
    if (header_length < 12 || header_length > MAX_HEADER || at < -1 || (at >= 0 && at + 3 > header_length) ||
        at == 0 || (at > 0 && at < 12) || payload_type < 0 || payload_type > 127 || first < 0 || first > 0xFFFF ||
        sequence_offset < 0 || sequence_offset > 0xFFFF || timestamp_offset > 0xFFFFFFFFULL ||
        next_sequence < 0 || next_sequence > 0xFFFF || abs_send_time > 0xFFFFFF ||
        PyList_GET_SIZE(ring) != HISTORY) {
        PyErr_SetString(PyExc_ValueError, "send(): an argument is out of range");
        return NULL;
    }
    Py_ssize_t total = PyList_GET_SIZE(packets);
    if (total > 4096) {
        PyErr_SetString(PyExc_ValueError, "send(): too many packets in one call");
        return NULL;
    }
    unsigned char *buffer = total ? PyMem_Malloc((size_t)total * SLOT) : NULL;
    int *lengths = total ? PyMem_Malloc((size_t)total * sizeof(int)) : NULL;
    if (total && (buffer == NULL || lengths == NULL)) {
        PyMem_Free(buffer);
        PyMem_Free(lengths);
        return PyErr_NoMemory();
    }
    int count = 0;
    long long last_timestamp = -1;
    unsigned long long octets = 0, wire = 0;
    PyObject *result = NULL;
    /* The lists' sizes are checked again on every use: reading a packet's attributes may run Python code. */
    for (Py_ssize_t i = 0; i < total && i < PyList_GET_SIZE(packets); i++) {
        PyObject *packet = PyList_GET_ITEM(packets, i);
        Py_INCREF(packet);
        unsigned long long seq, ts;
        int marker = -1;
        PyObject *payload = NULL;
        if (get_uint(packet, s_sequence_number, 0xFFFF, &seq) == 0) {
            if (((seq - (unsigned long long)first) & 0xFFFF) >= 0x8000) {  /* before this source started here */
                Py_DECREF(packet);
                continue;
            }
            if (get_uint(packet, s_timestamp, 0xFFFFFFFFULL, &ts) == 0) {
                PyObject *marker_obj = PyObject_GetAttr(packet, s_marker);
                if (marker_obj != NULL) {
                    marker = PyObject_IsTrue(marker_obj);
                    Py_DECREF(marker_obj);
                }
                if (marker >= 0) payload = PyObject_GetAttr(packet, s_payload);
            }
        }
        Py_DECREF(packet);
        if (payload == NULL) goto done;
        if (!PyBytes_Check(payload)) {
            Py_DECREF(payload);
            PyErr_SetString(PyExc_TypeError, "packet payload must be bytes");
            goto done;
        }
        Py_ssize_t payload_length = PyBytes_GET_SIZE(payload);
        if (header_length + payload_length > MAX_PLAIN) {  /* does not fit the SRTP buffer: never truncated */
            Py_DECREF(payload);
            continue;
        }
        unsigned long out_seq = (unsigned long)((seq + (unsigned long long)sequence_offset) & 0xFFFF);
        unsigned long out_ts = (unsigned long)((ts + timestamp_offset) & 0xFFFFFFFFULL);
        unsigned char *slot = buffer + (size_t)count * SLOT;
        memcpy(slot, header, (size_t)header_length);
        slot[1] = (unsigned char)(payload_type | (marker ? 0x80 : 0));
        slot[2] = (unsigned char)(out_seq >> 8);
        slot[3] = (unsigned char)out_seq;
        slot[4] = (unsigned char)(out_ts >> 24);
        slot[5] = (unsigned char)(out_ts >> 16);
        slot[6] = (unsigned char)(out_ts >> 8);
        slot[7] = (unsigned char)out_ts;
        if (at > 0) {
            slot[at] = (unsigned char)(abs_send_time >> 16);
            slot[at + 1] = (unsigned char)(abs_send_time >> 8);
            slot[at + 2] = (unsigned char)abs_send_time;
        }
        memcpy(slot + header_length, PyBytes_AS_STRING(payload), (size_t)payload_length);
        Py_DECREF(payload);
        int length = (int)(header_length + payload_length);
        /* Kept for retransmission on NACK, as aiortc's sender keeps it (plain: aiortc protects it again). */
        PyObject *plain = PyBytes_FromStringAndSize((const char *)slot, length);
        if (plain == NULL) goto done;
        if (PyList_SetItem(ring, (Py_ssize_t)(out_seq % HISTORY), plain) < 0) goto done;  /* bounds-checked */
        int status = route->protect(route->context, slot, &length);
        if (status) {
            PyErr_Format(PyExc_ConnectionError, "SRTP protect failed (libsrtp status %d)", status);
            goto done;
        }
        if (length < 0 || length > SLOT) {  /* cannot happen with libsrtp's trailers; never trust it blindly */
            PyErr_SetString(PyExc_RuntimeError, "SRTP protect wrote past its buffer");
            goto done;
        }
        lengths[count++] = length;
        octets += (unsigned long long)payload_length;
        wire += (unsigned long long)length;
        last_timestamp = (long long)out_ts;
        if (((out_seq - (unsigned long)next_sequence) & 0xFFFF) < 0x8000) /* not before the next number */
            next_sequence = (long)((out_seq + 1) & 0xFFFF);
    }
    PyObject *rest = Py_None;
    int refused = 0;
    if (count) {
        int sent = 0;
        if (direct && route->sock != Py_None) {  /* None: a TURN relay's transport, it wraps each datagram */
            int fd = PyObject_AsFileDescriptor(route->sock);
            if (fd < 0) {
                PyErr_Clear();  /* closed under us: the transport reports it */
            } else {
                sent = send_datagrams(route, fd, buffer, lengths, count, &refused);
            }
        }
        if (sent < count) {
            rest = rest_of(buffer, lengths, sent, count);
            if (rest == NULL) goto done;
        } else {
            Py_INCREF(rest);
        }
    } else {
        Py_INCREF(rest);
    }
    result = Py_BuildValue("(lLiKKNO)", next_sequence, last_timestamp, count, octets, wire, rest,
                           refused ? Py_True : Py_False);
done:
    PyMem_Free(buffer);
    PyMem_Free(lengths);
    return result;
}

/* The receive side (parse_rtp), defined in its own section at the end of this file. */
static PyObject *fastpath_parse_rtp(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
static int receive_init(PyObject *m);

static PyMethodDef methods[] = {
    {"send", (PyCFunction)(void (*)(void))fastpath_send, METH_FASTCALL,
     "send(route, header, at, abs_send_time, payload_type, first, sequence_offset, timestamp_offset, "
     "next_sequence, packets, ring, direct) -> (next_sequence, last_timestamp, count, octets, wire_bytes, rest, "
     "gso_refused)"},
    {"parse_rtp", (PyCFunction)(void (*)(void))fastpath_parse_rtp, METH_FASTCALL,
     "parse_rtp(data, abs_send_time_id, vp8) -> ReceivedRtp, or None where aiortc's receiver would not take it"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpath",
    "The per-packet part of rtc_internals.RtpOut.send in compiled code (see fastpath.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&RouteType) < 0) return NULL;
    s_sequence_number = PyUnicode_InternFromString("sequence_number");
    s_timestamp = PyUnicode_InternFromString("timestamp");
    s_marker = PyUnicode_InternFromString("marker");
    s_payload = PyUnicode_InternFromString("payload");
    if (!s_sequence_number || !s_timestamp || !s_marker || !s_payload) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&RouteType);
    if (PyModule_AddObject(m, "Route", (PyObject *)&RouteType) < 0) {
        Py_DECREF(&RouteType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "MAX_PLAIN", MAX_PLAIN) < 0 || PyModule_AddIntConstant(m, "HISTORY", HISTORY) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (receive_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/* ===================================================================================================
 * The receive side (issue #21, the lean receive path; rtc_internals.LeanReceive calls it).
 *
 * parse_rtp(data, abs_send_time_id, vp8): an unprotected RTP packet's header, as aiortc's RtpPacket.parse
 * reads it (RFC 3550 5.1, extensions RFC 8285), into a ReceivedRtp (a struct sequence: named fields, one
 * allocation) with only what the forwarder and aiortc's receive bookkeeping read: ssrc, payload_type,
 * marker, sequence_number, timestamp, payload, padding_size and the abs-send-time extension's value (or
 * None). It returns None, never raising, for every packet aiortc's path would refuse or treat specially,
 * which then goes through aiortc's own path (that drops it as before): shorter than 12 bytes, version other
 * than 2, CSRCs or an extension header or value past the end, a one-/two-byte extension element past the
 * end, an abs-send-time element not 3 bytes long (aiortc's unpack would fail), padding of 0 or longer than
 * what follows the header, and with `vp8` a non-empty payload whose VP8 payload descriptor (RFC 7741 4.2)
 * is truncated (aiortc's depayload refuses it). Hand-written: RtpPacket.parse builds a packet object, a
 * header-extensions dataclass and a list per packet; no library parses RTP for aiortc's objects.
 *
 * Hostile input: every read is preceded by a bounds check against the datagram's length; lengths are
 * Py_ssize_t and never negative; nothing is written but the new object.
 * =================================================================================================== */

#include <math.h>  /* rint: Python's round, half to even, for RateCounter */

static PyTypeObject *ReceivedRtpType;

static PyStructSequence_Field received_fields[] = {
    {"ssrc", "the source's SSRC"},
    {"payload_type", "RTP payload type"},
    {"marker", "RTP marker bit (0 or 1)"},
    {"sequence_number", "RTP sequence number"},
    {"timestamp", "RTP timestamp"},
    {"payload", "the payload (after CSRCs and extensions, without padding)"},
    {"padding_size", "bytes of RTP padding (0 without)"},
    {"abs_send_time", "the abs-send-time extension's 24-bit value, or None"},
    {NULL, NULL},
};

static PyStructSequence_Desc received_desc = {
    "services.media._fastpath.ReceivedRtp",
    "An incoming RTP packet's fields that the forwarder and aiortc's receive bookkeeping read.",
    received_fields, 8,
};

/* Whether a VP8 payload descriptor (RFC 7741 4.2) fits in `size` bytes, exactly as aiortc's
 * VpxPayloadDescriptor.parse checks it. */
static int vp8_descriptor_fits(const unsigned char *p, Py_ssize_t size) {
    Py_ssize_t pos = 1;
    if (size < 1) return 0;
    if (!(p[0] & 0x80)) return 1;
    if (size < pos + 1) return 0;
    unsigned char ext = p[pos++];
    if (ext & 0x80) {                 /* I: PictureID, 7 or 15 bits */
        if (size < pos + 1) return 0;
        if (p[pos] & 0x80) {
            if (size < pos + 2) return 0;
            pos += 2;
        } else {
            pos += 1;
        }
    }
    if (ext & 0x40) {                 /* L: TL0PICIDX */
        if (size < pos + 1) return 0;
        pos += 1;
    }
    if (ext & 0x30) {                 /* T or K: TID/Y/KEYIDX */
        if (size < pos + 1) return 0;
    }
    return 1;
}

/* Walks the extension elements of `value` (`length` bytes) as aiortc's unpack_header_extensions does;
 * sets *abs to the last abs-send-time element's value. Returns 0 where aiortc would raise. */
static int read_extensions(unsigned profile, const unsigned char *value, Py_ssize_t length, long abs_id,
                           long *abs) {
    Py_ssize_t pos = 0;
    int two_byte;
    if (profile == 0xBEDE) two_byte = 0;
    else if (profile == 0x1000) two_byte = 1;
    else return 1;                    /* another profile: aiortc reads no elements */
    while (pos < length) {
        if (value[pos] == 0) {        /* padding */
            pos++;
            continue;
        }
        long id;
        Py_ssize_t size;
        if (two_byte) {
            if (length < pos + 2) return 0;
            id = value[pos];
            size = value[pos + 1];
            pos += 2;
        } else {
            id = value[pos] >> 4;
            size = (value[pos] & 0x0F) + 1;
            pos += 1;
        }
        if (length < pos + size) return 0;
        if (id == abs_id) {
            if (size != 3) return 0;  /* aiortc's unpack("!L", b"\0" + value) needs exactly 3 bytes */
            *abs = ((long)value[pos] << 16) | ((long)value[pos + 1] << 8) | value[pos + 2];
        }
        pos += size;
    }
    return 1;
}

static PyObject *fastpath_parse_rtp(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "parse_rtp(data, abs_send_time_id, vp8)");
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "data must be bytes");
        return NULL;
    }
    long abs_id = PyLong_AsLong(args[1]);  /* 0: not negotiated (aiortc's None: no element has id 0) */
    if (abs_id == -1 && PyErr_Occurred()) return NULL;
    int vp8 = PyObject_IsTrue(args[2]);
    if (vp8 < 0) return NULL;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);

    if (size < 12 || (p[0] >> 6) != 2) Py_RETURN_NONE;
    Py_ssize_t pos = 12 + 4 * (Py_ssize_t)(p[0] & 0x0F);
    if (size < pos) Py_RETURN_NONE;
    long abs = -1;
    if (p[0] & 0x10) {
        if (size < pos + 4) Py_RETURN_NONE;
        unsigned profile = ((unsigned)p[pos] << 8) | p[pos + 1];
        Py_ssize_t length = 4 * (Py_ssize_t)(((unsigned)p[pos + 2] << 8) | p[pos + 3]);
        pos += 4;
        if (size < pos + length) Py_RETURN_NONE;
        if (!read_extensions(profile, p + pos, length, abs_id, &abs)) Py_RETURN_NONE;
        pos += length;
    }
    Py_ssize_t padding = 0;
    if (p[0] & 0x20) {
        padding = p[size - 1];
        if (!padding || padding > size - pos) Py_RETURN_NONE;
    }
    Py_ssize_t payload_size = size - pos - padding;
    if (vp8 && payload_size > 0 && !vp8_descriptor_fits(p + pos, payload_size)) Py_RETURN_NONE;

    PyObject *packet = PyStructSequence_New(ReceivedRtpType);
    if (packet == NULL) return NULL;
    PyObject *values[8] = {
        PyLong_FromUnsignedLong(((unsigned long)p[8] << 24) | ((unsigned long)p[9] << 16) |
                                ((unsigned long)p[10] << 8) | p[11]),
        PyLong_FromLong(p[1] & 0x7F),
        PyLong_FromLong(p[1] >> 7),
        PyLong_FromLong(((long)p[2] << 8) | p[3]),
        PyLong_FromUnsignedLong(((unsigned long)p[4] << 24) | ((unsigned long)p[5] << 16) |
                                ((unsigned long)p[6] << 8) | p[7]),
        PyBytes_FromStringAndSize((const char *)p + pos, payload_size),
        PyLong_FromSsize_t(padding),
        abs >= 0 ? PyLong_FromLong(abs) : Py_NewRef(Py_None),
    };
    int failed = 0;
    for (int i = 0; i < 8; i++) {
        if (values[i] == NULL) failed = 1;
        PyStructSequence_SET_ITEM(packet, i, values[i]);  /* a NULL item is allowed: the dealloc skips it */
    }
    if (failed) {
        Py_DECREF(packet);
        return NULL;
    }
    return packet;
}

/* RateCounter: aiortc.rate.RateCounter (the incoming bitrate of the REMB estimator, RemoteBitrateEstimator's
 * ``incoming_bitrate``) with the same arithmetic, in C. aiortc's erases old 1 ms buckets one Python loop
 * iteration per millisecond passed, twice per packet (rate, then add): about two thirds of the estimator's
 * time per packet. Here the loop stops after one full window (every bucket is empty by then; the origin
 * moves on by the same amount), and Python's floor modulo and round-half-even are kept, so every figure is
 * aiortc's. load() takes an aiortc counter's state over (the estimator has seen a source's first packets). */
typedef struct {
    PyObject_HEAD
    long long window;
    long long scale;
    long long origin_index;
    long long origin_ms;
    int has_origin;
    long long total_count;
    long long total_value;
    long long *counts;
    long long *values;
} RateCounter;

static long long floor_mod(long long a, long long b) {
    long long r = a % b;
    return r < 0 ? r + b : r;
}

static int RateCounter_init(RateCounter *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"window_size", "scale", NULL};
    long long window, scale = 8000;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "L|L", kwlist, &window, &scale)) return -1;
    if (window < 1 || window > 100000 || scale < 0 || scale > (1LL << 40)) {
        PyErr_SetString(PyExc_ValueError, "window_size must be 1-100000 and scale 0-2**40");
        return -1;
    }
    PyMem_Free(self->counts);
    PyMem_Free(self->values);
    self->counts = PyMem_Calloc((size_t)window, sizeof(long long));
    self->values = PyMem_Calloc((size_t)window, sizeof(long long));
    if (!self->counts || !self->values) {
        PyErr_NoMemory();
        return -1;
    }
    self->window = window;
    self->scale = scale;
    self->origin_index = 0;
    self->has_origin = 0;
    self->total_count = self->total_value = 0;
    return 0;
}

static void RateCounter_dealloc(RateCounter *self) {
    PyMem_Free(self->counts);
    PyMem_Free(self->values);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static void erase_old(RateCounter *self, long long now_ms) {
    long long new_origin = now_ms - self->window + 1;
    if (self->origin_ms >= new_origin) return;
    long long steps = new_origin - self->origin_ms;
    long long clear = steps < self->window ? steps : self->window;
    for (long long i = 0; i < clear; i++) {
        long long at = (self->origin_index + i) % self->window;
        self->total_count -= self->counts[at];
        self->total_value -= self->values[at];
        self->counts[at] = self->values[at] = 0;
    }
    self->origin_index = (self->origin_index + steps) % self->window;
    self->origin_ms = new_origin;
}

static PyObject *RateCounter_add(RateCounter *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "add(value, now_ms)");
        return NULL;
    }
    long long value = PyLong_AsLongLong(args[0]);
    if (value == -1 && PyErr_Occurred()) return NULL;
    long long now_ms = PyLong_AsLongLong(args[1]);
    if (now_ms == -1 && PyErr_Occurred()) return NULL;
    if (value < 0 || value > (1LL << 32) || now_ms < 0 || now_ms > (1LL << 52)) {
        PyErr_SetString(PyExc_ValueError, "value or now_ms out of range");
        return NULL;
    }
    if (!self->has_origin) {
        self->origin_ms = now_ms;
        self->has_origin = 1;
    } else {
        erase_old(self, now_ms);
    }
    long long at = floor_mod(self->origin_index + now_ms - self->origin_ms, self->window);
    self->counts[at] += 1;
    self->values[at] += value;
    self->total_count += 1;
    self->total_value += value;
    Py_RETURN_NONE;
}

static PyObject *RateCounter_rate(RateCounter *self, PyObject *arg) {
    long long now_ms = PyLong_AsLongLong(arg);
    if (now_ms == -1 && PyErr_Occurred()) return NULL;
    if (now_ms < 0 || now_ms > (1LL << 52)) {
        PyErr_SetString(PyExc_ValueError, "now_ms out of range");
        return NULL;
    }
    if (!self->has_origin) Py_RETURN_NONE;
    erase_old(self, now_ms);
    long long active = now_ms - self->origin_ms + 1;
    if (self->total_count > 0 && active > 1) {
        /* Python: round(scale * value / active), a correctly rounded true division, then half to even */
        double rate = rint((double)(self->scale * self->total_value) / (double)active);
        return PyLong_FromDouble(rate);
    }
    Py_RETURN_NONE;
}

static PyObject *RateCounter_reset(RateCounter *self, PyObject *unused) {
    memset(self->counts, 0, (size_t)self->window * sizeof(long long));
    memset(self->values, 0, (size_t)self->window * sizeof(long long));
    self->origin_index = 0;
    self->has_origin = 0;
    self->total_count = self->total_value = 0;
    Py_RETURN_NONE;
}

static PyObject *RateCounter_load(RateCounter *self, PyObject *args) {
    /* load(origin_index, origin_ms or None, counts, values): an aiortc RateCounter's state */
    long long origin_index;
    PyObject *origin, *counts, *values;
    if (!PyArg_ParseTuple(args, "LOO!O!", &origin_index, &origin, &PyList_Type, &counts, &PyList_Type, &values))
        return NULL;
    if (origin_index < 0 || origin_index >= self->window || PyList_GET_SIZE(counts) != self->window ||
        PyList_GET_SIZE(values) != self->window) {
        PyErr_SetString(PyExc_ValueError, "state does not fit this counter's window");
        return NULL;
    }
    long long origin_ms = 0;
    if (origin != Py_None) {
        origin_ms = PyLong_AsLongLong(origin);
        if (origin_ms == -1 && PyErr_Occurred()) return NULL;
    }
    long long total_count = 0, total_value = 0;
    for (Py_ssize_t i = 0; i < self->window; i++) {
        long long c = PyLong_AsLongLong(PyList_GET_ITEM(counts, i));
        if (c == -1 && PyErr_Occurred()) return NULL;
        long long v = PyLong_AsLongLong(PyList_GET_ITEM(values, i));
        if (v == -1 && PyErr_Occurred()) return NULL;
        if (c < 0 || v < 0 || c > (1LL << 40) || v > (1LL << 50)) {
            PyErr_SetString(PyExc_ValueError, "bucket out of range");
            return NULL;
        }
        self->counts[i] = c;
        self->values[i] = v;
        total_count += c;
        total_value += v;
    }
    self->origin_index = origin_index;
    self->origin_ms = origin_ms;
    self->has_origin = origin != Py_None;
    self->total_count = total_count;
    self->total_value = total_value;
    Py_RETURN_NONE;
}

static PyMethodDef RateCounter_methods[] = {
    {"add", (PyCFunction)(void (*)(void))RateCounter_add, METH_FASTCALL, "add(value, now_ms)"},
    {"rate", (PyCFunction)RateCounter_rate, METH_O, "rate(now_ms) -> bit/s (value x scale per ms), or None"},
    {"reset", (PyCFunction)RateCounter_reset, METH_NOARGS, "forget everything"},
    {"load", (PyCFunction)RateCounter_load, METH_VARARGS,
     "load(origin_index, origin_ms, counts, values): take an aiortc RateCounter's state over"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RateCounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "services.media._fastpath.RateCounter",
    .tp_basicsize = sizeof(RateCounter),
    .tp_dealloc = (destructor)RateCounter_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "RateCounter(window_size, scale=8000): aiortc.rate.RateCounter's arithmetic in C",
    .tp_methods = RateCounter_methods,
    .tp_init = (initproc)RateCounter_init,
    .tp_new = PyType_GenericNew,
};

static int receive_init(PyObject *m) {
    ReceivedRtpType = PyStructSequence_NewType(&received_desc);
    if (ReceivedRtpType == NULL) return -1;
    Py_INCREF(ReceivedRtpType);
    if (PyModule_AddObject(m, "ReceivedRtp", (PyObject *)ReceivedRtpType) < 0) {
        Py_DECREF(ReceivedRtpType);
        return -1;
    }
    if (PyType_Ready(&RateCounterType) < 0) return -1;
    Py_INCREF(&RateCounterType);
    if (PyModule_AddObject(m, "RateCounter", (PyObject *)&RateCounterType) < 0) {
        Py_DECREF(&RateCounterType);
        return -1;
    }
    return 0;
}
