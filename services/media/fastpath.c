/* services.media._fastpath: the per-packet part of rtc_internals.RtpOut.send in compiled code.
 *
 * What it does, per subscriber and frame, is exactly what the Python reference in RtpOut.send does
 * (tests/media/test_fastpath.py compares the bytes): each source packet keeps its payload and gets the
 * sender's header (payload type and marker, sequence number and timestamp shifted into the sender's
 * spaces, abs-send-time patched), is kept in the sender's retransmission ring (a Ring: references to the
 * header and the payload, composed into the plain packet only when a NACK asks), is
 * SRTP-protected and goes to the socket of the nominated ICE pair: one sendto for one datagram, one
 * UDP GSO sendmsg for up to 32 datagrams of equal size (udp(7) UDP_SEGMENT), datagram by datagram
 * otherwise. What the socket does not take now (a full buffer, an error) is handed back, in order, for
 * asyncio's transport to queue or report, as the reference does.
 *
 * Why compiled: under py-spy at 1 room x 10 the Python loop around the work (header patching, byte
 * concatenation, the cffi call into libsrtp, the socket module's address parsing per sendto) cost more
 * than the encryption and the system calls themselves. No library does this for aiortc.
 *
 * SRTP: the sender's own libsrtp context, the pylibsrtp session its SSRC is protected in (aiortc's
 * RTCDtlsTransport._tx_srtp, split per source by rtc_internals.SrtpPerSource), is used through the
 * srtp_protect function of the libsrtp pylibsrtp carries (its address, from cffi). So every RTP packet of
 * a sender's SSRC, ours and aiortc's retransmissions alike, goes through one context (rollover counter and
 * index stay right), the keys never leave pylibsrtp, and there is one libsrtp in the process.
 * rtc_internals.py takes both addresses; tests/media/test_aiortc_internals.py checks the signature.
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
#include <stddef.h>
#include <time.h>

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
#define WINDOW 0x4000        /* rtc_internals.WINDOW: how far `first` follows behind the newest packet sent */

/* libsrtp 2's srtp_protect(srtp_t, void *rtp_hdr, int *len_ptr), as pylibsrtp 1.0.0 declares it. */
typedef int (*protect_fn)(void *ctx, void *rtp, int *len);

/* ---------------------------------------------------------------------------------------------------
 * The retransmission ring: the last HISTORY packets a sender sent, by sequence number % HISTORY, as
 * rtc_internals.RawHistory reads them (ring[i] -> the plain RTP bytes, or None).
 *
 * Why not a list of bytes: a fan-out sends each source packet to every subscriber, and copying it into a
 * new bytes object per subscriber (and freeing the one it replaced) was 6 % of the media process at
 * 1 room x 16 (perf). An entry the fan-out writes holds references to the sender's header and the source's
 * payload (both immutable bytes, the payload shared by every subscriber's ring) and the fields it patched;
 * ring[i] composes the same plain bytes that were protected (compose(), used by both). Python may also
 * store plain bytes (RawHistory.__setitem__, aiortc's own loop) or None.
 * --------------------------------------------------------------------------------------------------- */

typedef struct {
    PyObject *plain;            /* bytes stored from Python, or NULL */
    PyObject *header, *payload; /* bytes, both or neither: what the fan-out sent, composed on read */
    int at;                     /* where abs-send-time was patched into the header, -1: not */
    unsigned char byte1;        /* marker and payload type */
    uint16_t seq;
    uint32_t ts, abs_send_time;
} RingEntry;

typedef struct {
    PyObject_HEAD
    RingEntry entries[HISTORY];
} Ring;

static void entry_set(RingEntry *e, PyObject *plain, PyObject *header, PyObject *payload) {
    /* References are taken before the old ones go; dropping a bytes object runs no Python code. */
    PyObject *old_plain = e->plain, *old_header = e->header, *old_payload = e->payload;
    e->plain = Py_XNewRef(plain);
    e->header = Py_XNewRef(header);
    e->payload = Py_XNewRef(payload);
    Py_XDECREF(old_plain);
    Py_XDECREF(old_header);
    Py_XDECREF(old_payload);
}

/* The plain RTP packet: the header with the marker and payload type, sequence number, timestamp and
 * abs-send-time (at `at`, if >= 0) patched, then the payload. `out` has room for header + payload. */
static size_t compose(unsigned char *out, PyObject *header, int at, unsigned char byte1, unsigned long seq,
                      unsigned long ts, unsigned long abs_send_time, PyObject *payload) {
    size_t header_length = (size_t)PyBytes_GET_SIZE(header), payload_length = (size_t)PyBytes_GET_SIZE(payload);
    memcpy(out, PyBytes_AS_STRING(header), header_length);
    out[1] = byte1;
    out[2] = (unsigned char)(seq >> 8);
    out[3] = (unsigned char)seq;
    out[4] = (unsigned char)(ts >> 24);
    out[5] = (unsigned char)(ts >> 16);
    out[6] = (unsigned char)(ts >> 8);
    out[7] = (unsigned char)ts;
    if (at > 0) {  /* set_header checked 12 <= at <= length - 3 */
        out[at] = (unsigned char)(abs_send_time >> 16);
        out[at + 1] = (unsigned char)(abs_send_time >> 8);
        out[at + 2] = (unsigned char)abs_send_time;
    }
    memcpy(out + header_length, PyBytes_AS_STRING(payload), payload_length);
    return header_length + payload_length;
}

static void Ring_dealloc(Ring *self) {
    for (int i = 0; i < HISTORY; i++) entry_set(&self->entries[i], NULL, NULL, NULL);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t Ring_length(Ring *self) { return HISTORY; }

static PyObject *Ring_item(Ring *self, Py_ssize_t i) {
    if (i < 0 || i >= HISTORY) {
        PyErr_SetString(PyExc_IndexError, "ring index out of range");
        return NULL;
    }
    RingEntry *e = &self->entries[i];
    if (e->plain != NULL) return Py_NewRef(e->plain);
    if (e->header == NULL) Py_RETURN_NONE;
    PyObject *plain = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(e->header) + PyBytes_GET_SIZE(e->payload));
    if (plain == NULL) return NULL;
    compose((unsigned char *)PyBytes_AS_STRING(plain), e->header, e->at, e->byte1, e->seq, e->ts, e->abs_send_time,
            e->payload);
    return plain;
}

static int Ring_ass_item(Ring *self, Py_ssize_t i, PyObject *value) {
    if (i < 0 || i >= HISTORY) {
        PyErr_SetString(PyExc_IndexError, "ring index out of range");
        return -1;
    }
    if (value != NULL && value != Py_None && !PyBytes_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "a ring entry is bytes or None");
        return -1;
    }
    entry_set(&self->entries[i], value == Py_None ? NULL : value, NULL, NULL);
    return 0;
}

static PySequenceMethods Ring_sequence = {
    .sq_length = (lenfunc)Ring_length,
    .sq_item = (ssizeargfunc)Ring_item,
    .sq_ass_item = (ssizeobjargproc)Ring_ass_item,
};

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "services.media._fastpath.Ring",
    .tp_doc = "Ring(): a sender's last 128 RTP packets by sequence number % 128 (bytes or None).",
    .tp_basicsize = sizeof(Ring),
    .tp_flags = Py_TPFLAGS_DEFAULT,  /* holds only bytes: no cycles */
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_as_sequence = &Ring_sequence,
};

/* One sender's route (rtc_internals.RtpOut keeps one per sender, for the sender's lifetime): where its
 * packets go (target(): the nominated pair's socket and address, the SRTP context), the live objects a
 * fan-out checks it against before sending (the sender, its DTLS transport, the ICE connection's
 * nominated pairs, the datagram transport), and the sender's own state, which the C code reads and
 * updates on every send (header, numbering, retransmission ring, Sender Report counters). Python sets
 * the state only where it changes: rebase, the header once, the payload type at start, arming.
 *
 * The counters aiortc keeps on the sender (__ntp_timestamp, __rtp_timestamp, __octet_count, __packet_count)
 * and its DTLS transport (__tx_bytes, __tx_packets) are added up here and settled into those attributes by
 * settle(): by Python before it reads them (rtc_internals.settle_counters: Sender Reports, report blocks,
 * getStats) and by the send itself once SETTLE_EVERY has passed, so nothing reads them further behind.
 * Setting six attributes of two objects per subscriber and send was another 5.5 % of the process (perf,
 * 1 x 16): their dictionaries, spread over memory, missed the cache. */
typedef struct {
    PyObject_HEAD
    PyObject *sock;       /* the transport's socket (fileno() taken per call: -1 once closed), or None */
    PyObject *session;    /* the pylibsrtp Session: keeps the libsrtp context alive; NULL: no target yet */
    protect_fn protect;
    void *context;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int gso;              /* 0 once the kernel refused UDP_SEGMENT on this route */
    /* Checked by fan_out, by identity, on every call (aiortc's RtpOut.send checks, without Python): */
    PyObject *sender;     /* the RTCRtpSender: its __transport must still be dtls, its _enabled true */
    PyObject *dtls;       /* its RTCDtlsTransport: _state must be `connected` */
    PyObject *connected;  /* aiortc's DtlsState.CONNECTED */
    PyObject *nominated;  /* the ICE connection's nominated pairs (a dict): [1] must still be `pair` */
    PyObject *pair;
    PyObject *transport;  /* the pair's asyncio datagram transport: nothing queued, not closing, to send direct */
    /* The sender's state (what RtpOut's Python reference keeps in a SendState): */
    PyObject *header;     /* the sender's serialised header (bytes), NULL until set_header() */
    int at;               /* offset of the 3 abs-send-time bytes in it, -1: none */
    PyObject *ring;       /* the retransmission ring: a Ring */
    long long payload_type, first, sequence_offset, timestamp_offset, sequence, last_timestamp, armed, sends;
    double last_time;     /* time.monotonic() of the last send (rebase reads it) */
    /* Not yet settled into the sender's and its transport's counters (none while pending_packets is 0): */
    unsigned long long pending_octets, pending_packets, pending_wire, ntp;
    double settled_at;
} Route;

#define SETTLE_EVERY 0.5  /* seconds: how far aiortc's counters may lag behind what was sent */

static PyObject *s_sequence_number, *s_timestamp, *s_marker, *s_payload, *s_transport, *s_enabled, *s_state,
    *s_ntp_timestamp, *s_rtp_timestamp, *s_octet_count, *s_packet_count, *s_tx_bytes, *s_tx_packets,
    *s_get_write_buffer_size, *s_is_closing, *one;

static int Route_init(Route *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Route", kwlist)) return -1;
    PyObject *ring = PyObject_CallNoArgs((PyObject *)&RingType);
    if (ring == NULL) return -1;
    Py_XSETREF(self->ring, ring);
    self->at = -1;
    self->payload_type = self->last_timestamp = -1;
    self->gso = 1;
    return 0;
}

/* The object fields, for the garbage collector (a Route refers to the sender, whose keyframe hook refers to
 * the track that holds the Route). */
#define ROUTE_OBJECTS(X) \
    X(sock) X(session) X(sender) X(dtls) X(connected) X(nominated) X(pair) X(transport) X(header) X(ring)

static int Route_traverse(Route *self, visitproc visit, void *arg) {
#define VISIT(field) Py_VISIT(self->field);
    ROUTE_OBJECTS(VISIT)
#undef VISIT
    return 0;
}

static int Route_clear(Route *self) {
#define CLEAR(field) Py_CLEAR(self->field);
    ROUTE_OBJECTS(CLEAR)
#undef CLEAR
    return 0;
}

static void Route_dealloc(Route *self) {
    PyObject_GC_UnTrack(self);
    Route_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static double monotonic(void) {  /* time.monotonic()'s clock on Linux */
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* obj.name += delta (the sender's and the DTLS transport's counters, as aiortc keeps them). */
static int add_to(PyObject *obj, PyObject *name, unsigned long long delta) {
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) return -1;
    PyObject *d = PyLong_FromUnsignedLongLong(delta);
    PyObject *sum = d ? PyNumber_Add(value, d) : NULL;
    Py_DECREF(value);
    Py_XDECREF(d);
    if (sum == NULL) return -1;
    int rc = PyObject_SetAttr(obj, name, sum);
    Py_DECREF(sum);
    return rc;
}

/* What aiortc's sender loop keeps per packet sent, for what was sent since the last settle: the Sender
 * Report's NTP and RTP timestamps (of the last send) and counts (RTCRtpSender's __ntp_timestamp,
 * __rtp_timestamp, __octet_count, __packet_count, also getStats's) and the DTLS transport's byte and packet
 * counters (__tx_bytes, __tx_packets). The pending figures are taken first: setting an attribute may run
 * Python code that sends or settles again, and nothing may count twice. -1 with an exception. */
static int settle(Route *r) {
    r->settled_at = monotonic();
    if (r->pending_packets == 0) return 0;  /* a send that counts anything sends at least one packet */
    unsigned long long octets = r->pending_octets, packets = r->pending_packets, wire = r->pending_wire;
    r->pending_octets = r->pending_packets = r->pending_wire = 0;
    PyObject *sender = r->sender, *dtls = r->dtls;
    if (sender == NULL || dtls == NULL) return 0;  /* no target (cannot have sent either) */
    Py_INCREF(sender);
    Py_INCREF(dtls);
    PyObject *ntp = PyLong_FromUnsignedLongLong(r->ntp), *ts = PyLong_FromLongLong(r->last_timestamp);
    int rc = ntp && ts ? 0 : -1;
    if (rc == 0) rc = PyObject_SetAttr(sender, s_ntp_timestamp, ntp);
    if (rc == 0) rc = PyObject_SetAttr(sender, s_rtp_timestamp, ts);
    if (rc == 0) rc = add_to(sender, s_octet_count, octets);
    if (rc == 0) rc = add_to(sender, s_packet_count, packets);
    if (rc == 0) rc = add_to(dtls, s_tx_bytes, wire);
    if (rc == 0) rc = add_to(dtls, s_tx_packets, packets);
    Py_XDECREF(ntp);
    Py_XDECREF(ts);
    Py_DECREF(sender);
    Py_DECREF(dtls);
    return rc;
}

static PyObject *Route_settle(Route *self, PyObject *unused) {
    if (settle(self) < 0) return NULL;
    Py_RETURN_NONE;
}

/* target(sock, host, port, protect, context, session, sender, dtls, connected, nominated, pair, transport) */
static PyObject *Route_target(Route *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"sock", "host", "port", "protect", "context", "session", "sender", "dtls", "connected",
                             "nominated", "pair", "transport", NULL};
    PyObject *sock, *session, *sender, *dtls, *connected, *nominated, *pair, *transport;
    const char *host;
    int port;
    unsigned long long protect, context;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OsiKKOOOOO!OO:target", kwlist, &sock, &host, &port, &protect,
                                     &context, &session, &sender, &dtls, &connected, &PyDict_Type, &nominated, &pair,
                                     &transport))
        return NULL;
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return NULL;
    }
    if (!protect || !context) {
        PyErr_SetString(PyExc_ValueError, "protect and context must be addresses");
        return NULL;
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
        return NULL;
    }
    if (settle(self) < 0) {  /* what was sent so far counts on the sender and transport it went by */
        freeaddrinfo(found);
        return NULL;
    }
    self->settled_at = 0.0;  /* the first send on the new target settles at once */
    memcpy(&self->addr, found->ai_addr, found->ai_addrlen);
    self->addrlen = (socklen_t)found->ai_addrlen;
    freeaddrinfo(found);
    self->protect = (protect_fn)(uintptr_t)protect;
    self->context = (void *)(uintptr_t)context;
    self->gso = 1;
    Py_XSETREF(self->sock, Py_NewRef(sock));
    Py_XSETREF(self->session, Py_NewRef(session));
    Py_XSETREF(self->sender, Py_NewRef(sender));
    Py_XSETREF(self->dtls, Py_NewRef(dtls));
    Py_XSETREF(self->connected, Py_NewRef(connected));
    Py_XSETREF(self->nominated, Py_NewRef(nominated));
    Py_XSETREF(self->pair, Py_NewRef(pair));
    Py_XSETREF(self->transport, Py_NewRef(transport));
    Py_RETURN_NONE;
}

/* set_header(header, at): the sender's serialised header (12-256 bytes) and where abs-send-time is in it. */
static PyObject *Route_set_header(Route *self, PyObject *args) {
    PyObject *header;
    int at;
    if (!PyArg_ParseTuple(args, "O!i:set_header", &PyBytes_Type, &header, &at)) return NULL;
    Py_ssize_t length = PyBytes_GET_SIZE(header);
    if (length < 12 || length > MAX_HEADER || at < -1 || (at >= 0 && (at < 12 || at + 3 > length))) {
        PyErr_SetString(PyExc_ValueError, "set_header(): header of 12-256 bytes, abs-send-time inside it or -1");
        return NULL;
    }
    Py_INCREF(header);
    Py_XSETREF(self->header, header);
    self->at = at;
    Py_RETURN_NONE;
}

static PyMethodDef Route_methods[] = {
    {"target", (PyCFunction)(void (*)(void))Route_target, METH_VARARGS | METH_KEYWORDS,
     "target(sock, host, port, protect, context, session, sender, dtls, connected, nominated, pair, transport)"},
    {"set_header", (PyCFunction)Route_set_header, METH_VARARGS, "set_header(header, at)"},
    {"settle", (PyCFunction)Route_settle, METH_NOARGS,
     "settle(): add what was sent since the last settle to the sender's and its DTLS transport's counters"},
    {NULL},
};

/* The int attributes Python reads and sets, each range-checked on every set. */
typedef struct {
    size_t offset;
    long long min, max;
    int boolean;
} Field;

static Field f_payload_type = {offsetof(Route, payload_type), -1, 127, 0};
static Field f_first = {offsetof(Route, first), 0, 0xFFFF, 0};
static Field f_sequence_offset = {offsetof(Route, sequence_offset), 0, 0xFFFF, 0};
static Field f_timestamp_offset = {offsetof(Route, timestamp_offset), 0, 0xFFFFFFFFLL, 0};
static Field f_sequence = {offsetof(Route, sequence), 0, 0xFFFF, 0};
static Field f_last_timestamp = {offsetof(Route, last_timestamp), -1, 0xFFFFFFFFLL, 0};
static Field f_armed = {offsetof(Route, armed), 0, 1, 1};
static Field f_sends = {offsetof(Route, sends), 0, LLONG_MAX, 0};

static PyObject *Route_get_int(Route *self, void *closure) {
    Field *f = closure;
    long long v = *(long long *)((char *)self + f->offset);
    return f->boolean ? PyBool_FromLong((long)v) : PyLong_FromLongLong(v);
}

static int Route_set_int(Route *self, PyObject *value, void *closure) {
    Field *f = closure;
    if (value == NULL || !PyLong_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "an int is required");
        return -1;
    }
    long long v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < f->min || v > f->max) {
        PyErr_Format(PyExc_ValueError, "%lld is out of range (%lld-%lld)", v, f->min, f->max);
        return -1;
    }
    *(long long *)((char *)self + f->offset) = v;
    return 0;
}

static PyObject *Route_get_gso(Route *self, void *closure) { return PyBool_FromLong(self->gso); }

static PyObject *Route_get_last_time(Route *self, void *closure) { return PyFloat_FromDouble(self->last_time); }

static int Route_set_last_time(Route *self, PyObject *value, void *closure) {
    double v = value ? PyFloat_AsDouble(value) : -1.0;
    if (value == NULL || (v == -1.0 && PyErr_Occurred())) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "a float is required");
        return -1;
    }
    self->last_time = v;
    return 0;
}

static PyObject *Route_get_ring(Route *self, void *closure) {
    Py_INCREF(self->ring);
    return self->ring;
}

static int Route_set_ring(Route *self, PyObject *value, void *closure) {
    if (value == NULL || !PyObject_TypeCheck(value, &RingType)) {
        PyErr_SetString(PyExc_TypeError, "ring must be a Ring");
        return -1;
    }
    Py_INCREF(value);
    Py_XSETREF(self->ring, value);
    return 0;
}

static PyObject *Route_get_header(Route *self, void *closure) {
    PyObject *header = self->header ? self->header : Py_None;
    Py_INCREF(header);
    return header;
}

static PyGetSetDef Route_getset[] = {
    {"gso", (getter)Route_get_gso, NULL, "False once the kernel refused UDP GSO on this route", NULL},
    {"payload_type", (getter)Route_get_int, (setter)Route_set_int, "the sender's payload type, -1 until it started",
     &f_payload_type},
    {"first", (getter)Route_get_int, (setter)Route_set_int, "the source's first sequence number since rebase", &f_first},
    {"sequence_offset", (getter)Route_get_int, (setter)Route_set_int, "source -> sender sequence numbers",
     &f_sequence_offset},
    {"timestamp_offset", (getter)Route_get_int, (setter)Route_set_int, "source -> sender timestamps",
     &f_timestamp_offset},
    {"sequence", (getter)Route_get_int, (setter)Route_set_int, "the next sequence number this sender uses", &f_sequence},
    {"last_timestamp", (getter)Route_get_int, (setter)Route_set_int, "the last timestamp sent, -1: none yet",
     &f_last_timestamp},
    {"armed", (getter)Route_get_int, (setter)Route_set_int, "fan_out may send on this route (no rebase pending)",
     &f_armed},
    {"sends", (getter)Route_get_int, (setter)Route_set_int, "sends that found the sender ready", &f_sends},
    {"last_time", (getter)Route_get_last_time, (setter)Route_set_last_time, "time.monotonic() of the last send", NULL},
    {"ring", (getter)Route_get_ring, (setter)Route_set_ring, "the retransmission ring (a Ring)", NULL},
    {"header", (getter)Route_get_header, NULL, "the sender's serialised header, None until set_header()", NULL},
    {NULL},
};

static PyTypeObject RouteType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "services.media._fastpath.Route",
    .tp_doc = "Route(): one sender's route and state; target() says where, set_header() what header.",
    .tp_basicsize = sizeof(Route),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Route_init,
    .tp_dealloc = (destructor)Route_dealloc,
    .tp_traverse = (traverseproc)Route_traverse,
    .tp_clear = (inquiry)Route_clear,
    .tp_methods = Route_methods,
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

/* One source packet, its fields read once per fan-out (not once per subscriber). */
typedef struct {
    unsigned long long seq, ts;
    int marker;
    PyObject *payload;  /* bytes, a reference */
} Source;

static void free_sources(Source *sources, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) Py_DECREF(sources[i].payload);
    PyMem_Free(sources);
}

/* Reads the packets' fields; NULL with an exception when one is not a packet. The list's size is checked
 * on every step: reading a packet's attributes may run Python code. */
static Source *read_sources(PyObject *packets, Py_ssize_t *n) {
    Py_ssize_t total = PyList_GET_SIZE(packets);
    *n = 0;
    if (total > 4096) {
        PyErr_SetString(PyExc_ValueError, "too many packets in one call");
        return NULL;
    }
    Source *sources = PyMem_Malloc((size_t)(total ? total : 1) * sizeof(Source));
    if (sources == NULL) return (Source *)PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < total && i < PyList_GET_SIZE(packets); i++) {
        PyObject *packet = PyList_GET_ITEM(packets, i);
        Py_INCREF(packet);
        Source s = {0, 0, -1, NULL};
        if (get_uint(packet, s_sequence_number, 0xFFFF, &s.seq) == 0 &&
            get_uint(packet, s_timestamp, 0xFFFFFFFFULL, &s.ts) == 0) {
            PyObject *marker = PyObject_GetAttr(packet, s_marker);
            if (marker != NULL) {
                s.marker = PyObject_IsTrue(marker);
                Py_DECREF(marker);
            }
            if (s.marker >= 0) s.payload = PyObject_GetAttr(packet, s_payload);
        }
        Py_DECREF(packet);
        if (s.payload != NULL && !PyBytes_Check(s.payload)) {
            Py_CLEAR(s.payload);
            PyErr_SetString(PyExc_TypeError, "packet payload must be bytes");
        }
        if (s.payload == NULL) {
            free_sources(sources, *n);
            return NULL;
        }
        sources[(*n)++] = s;
    }
    return sources;
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

/* Whether the route's datagrams may go straight on its socket: it has one (not a TURN relay's transport,
 * which wraps each datagram) and asyncio's transport has nothing queued (order) and is not closing. */
static int direct(Route *r) {
    if (r->sock == NULL || r->sock == Py_None || r->transport == NULL) return 0;
    PyObject *transport = r->transport;
    Py_INCREF(transport);
    int ok = 0;
    PyObject *size = PyObject_CallMethodNoArgs(transport, s_get_write_buffer_size);
    if (size != NULL) {
        int queued = PyObject_IsTrue(size);
        Py_DECREF(size);
        PyObject *closing = queued == 0 ? PyObject_CallMethodNoArgs(transport, s_is_closing) : NULL;
        if (closing != NULL) {
            ok = PyObject_IsTrue(closing) == 0;
            Py_DECREF(closing);
        }
    }
    Py_DECREF(transport);
    if (PyErr_Occurred()) PyErr_Clear();  /* a transport that cannot say: through it, it reports its own errors */
    return ok;
}

/* One route's part of a send: re-head `sources` for this sender, keep each in its ring, protect and send
 * them, count them (settle). Returns the datagrams made (>= 0), *rest (a new list, or NULL) what the socket did
 * not take now; -1 with an exception (ConnectionError: libsrtp refused; then nothing is sent and only the
 * ring has changed, as in the Python reference). `buffer` has room for n datagrams. */
static int forward(Route *r, const Source *sources, Py_ssize_t n, unsigned long abs_send_time, unsigned long long ntp,
                   double now, unsigned char *buffer, int *lengths, PyObject **rest, int *refused) {
    *rest = NULL;
    *refused = 0;
    if (r->header == NULL || r->session == NULL || r->payload_type < 0 || r->ring == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the route has no target, header or payload type yet");
        return -1;
    }
    /* Held here: code run below (a transport's methods, settle's attributes) may replace them on r. */
    PyObject *header_obj = r->header, *ring_obj = r->ring, *session = r->session, *sock = r->sock;
    Py_INCREF(header_obj);
    Py_INCREF(ring_obj);
    Py_INCREF(session);
    Py_XINCREF(sock);
    Ring *ring = (Ring *)ring_obj;  /* Route_set_ring admits only a Ring */
    protect_fn protect = r->protect;
    void *context = r->context;
    Py_ssize_t header_length = PyBytes_GET_SIZE(header_obj);
    int at = r->at;
    unsigned long payload_type = (unsigned long)r->payload_type;
    unsigned long long first = (unsigned long long)r->first, sequence_offset = (unsigned long long)r->sequence_offset;
    unsigned long long timestamp_offset = (unsigned long long)r->timestamp_offset;
    unsigned long next_sequence = (unsigned long)r->sequence;
    int count = 0, result = -1;
    unsigned long long octets = 0, wire = 0, last_timestamp = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const Source *s = &sources[i];
        unsigned long long since = (s->seq - first) & 0xFFFF;
        if (since >= 0x8000) continue;  /* before this source started on this sender (or half the numbering behind) */
        Py_ssize_t payload_length = PyBytes_GET_SIZE(s->payload);
        if (header_length + payload_length > MAX_PLAIN) continue;  /* does not fit the SRTP buffer: never cut */
        if (since >= WINDOW) first = (s->seq - WINDOW) & 0xFFFF;  /* first follows the stream (rtc_internals.WINDOW) */
        unsigned long out_seq = (unsigned long)((s->seq + sequence_offset) & 0xFFFF);
        unsigned long out_ts = (unsigned long)((s->ts + timestamp_offset) & 0xFFFFFFFFULL);
        unsigned char *slot = buffer + (size_t)count * SLOT;
        unsigned char byte1 = (unsigned char)(payload_type | (s->marker ? 0x80 : 0));
        int length = (int)compose(slot, header_obj, at, byte1, out_seq, out_ts, abs_send_time, s->payload);
        /* Kept for retransmission on NACK, as aiortc's sender keeps it (plain: aiortc protects it again). */
        RingEntry *entry = &ring->entries[out_seq % HISTORY];
        entry_set(entry, NULL, header_obj, s->payload);
        entry->at = at;
        entry->byte1 = byte1;
        entry->seq = (uint16_t)out_seq;
        entry->ts = (uint32_t)out_ts;
        entry->abs_send_time = (uint32_t)abs_send_time;
        int status = protect(context, slot, &length);
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
        last_timestamp = out_ts;
        if (((out_seq - next_sequence) & 0xFFFF) < 0x8000) /* not before the next number: continue after it */
            next_sequence = (out_seq + 1) & 0xFFFF;
    }
    r->sequence = (long long)next_sequence;
    r->first = (long long)first;
    if (count) {
        int sent = 0;
        if (direct(r)) {
            int fd = PyObject_AsFileDescriptor(sock);
            if (fd < 0)
                PyErr_Clear();  /* closed under us: the transport reports it */
            else
                sent = send_datagrams(r, fd, buffer, lengths, count, refused);
        }
        if (sent < count && (*rest = rest_of(buffer, lengths, sent, count)) == NULL) goto done;
        r->last_timestamp = (long long)last_timestamp;
        r->last_time = now;
        r->pending_octets += octets;
        r->pending_packets += (unsigned long long)count;
        r->pending_wire += wire;
        r->ntp = ntp;
        if (!(now - r->settled_at < SETTLE_EVERY) && settle(r) < 0) {  /* (a NaN or a step back settles too) */
            Py_CLEAR(*rest);
            goto done;
        }
    }
    r->sends++;
    result = count;
done:
    Py_DECREF(header_obj);
    Py_DECREF(ring_obj);
    Py_DECREF(session);
    Py_XDECREF(sock);
    return result;
}

/* Whether fan_out may send on the route now: armed by Python (the track forwards, no rebase pending), set
 * up, and what RtpOut.send checks still holds: the sender still on the same DTLS transport, which is
 * connected, the sender enabled, the same nominated pair. Checked against the live objects on every call,
 * so no change in aiortc or aioice can be missed; anything else (or an error reading them) is Python's. */
static int ready(Route *r) {
    if (!r->armed || r->header == NULL || r->session == NULL || r->payload_type < 0 || r->sender == NULL ||
        r->nominated == NULL || r->ring == NULL)
        return 0;
    int ok = 0;
    PyObject *sender = r->sender, *dtls = r->dtls, *nominated = r->nominated;
    Py_INCREF(sender);
    Py_INCREF(dtls);
    Py_INCREF(nominated);
    PyObject *transport = PyObject_GetAttr(sender, s_transport);
    if (transport != NULL) {
        ok = transport == dtls;
        Py_DECREF(transport);
    }
    if (ok) {
        PyObject *state = PyObject_GetAttr(dtls, s_state);
        ok = state != NULL && state == r->connected;
        Py_XDECREF(state);
    }
    if (ok) {
        PyObject *enabled = PyObject_GetAttr(sender, s_enabled);
        ok = enabled != NULL && PyObject_IsTrue(enabled) == 1;
        Py_XDECREF(enabled);
    }
    if (ok) {
        PyObject *pair = PyDict_GetItemWithError(nominated, one);  /* borrowed */
        ok = pair != NULL && pair == r->pair;
    }
    Py_DECREF(sender);
    Py_DECREF(dtls);
    Py_DECREF(nominated);
    if (PyErr_Occurred()) PyErr_Clear();  /* Python's RtpOut.send then decides, and raises what it raises */
    return ok;
}

/* What send and fan_out share: the packets' fields (read once), abs_send_time, and room for the datagrams. */
typedef struct {
    Source *sources;
    Py_ssize_t n;
    unsigned long abs_send_time;
    unsigned long long ntp;
    unsigned char *buffer;
    int *lengths;
} Batch;

static void close_batch(Batch *batch) {
    PyMem_Free(batch->buffer);
    PyMem_Free(batch->lengths);
    if (batch->sources) free_sources(batch->sources, batch->n);
}

/* packets (a list), abs_send_time (24 bits), ntp (an int of at most 64 bits); -1 with an exception. */
static int open_batch(PyObject *packets, PyObject *abs_send_time, PyObject *ntp, Batch *batch) {
    memset(batch, 0, sizeof *batch);
    if (!PyList_Check(packets) || !PyLong_Check(abs_send_time) || !PyLong_Check(ntp)) {
        PyErr_SetString(PyExc_TypeError, "packets must be a list, abs_send_time and ntp ints");
        return -1;
    }
    batch->abs_send_time = PyLong_AsUnsignedLong(abs_send_time);
    if (PyErr_Occurred()) return -1;
    batch->ntp = PyLong_AsUnsignedLongLong(ntp);
    if (PyErr_Occurred()) return -1;
    if (batch->abs_send_time > 0xFFFFFF) {
        PyErr_SetString(PyExc_ValueError, "abs_send_time is 24 bits");
        return -1;
    }
    if ((batch->sources = read_sources(packets, &batch->n)) == NULL) return -1;
    size_t room = (size_t)(batch->n ? batch->n : 1);
    batch->buffer = PyMem_Malloc(room * SLOT);
    batch->lengths = PyMem_Malloc(room * sizeof(int));
    if (batch->buffer == NULL || batch->lengths == NULL) {
        close_batch(batch);
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* send(route, packets, abs_send_time, ntp) -> (datagrams, rest or None, gso_refused): one route, which
 * Python has checked (RtpOut.send); ConnectionError when libsrtp refuses. */
static PyObject *fastpath_send(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Batch batch;
    if (nargs != 4 || !PyObject_TypeCheck(args[0], &RouteType)) {
        PyErr_SetString(PyExc_TypeError, "send(route, packets, abs_send_time, ntp)");
        return NULL;
    }
    if (open_batch(args[1], args[2], args[3], &batch) < 0) return NULL;
    PyObject *result = NULL, *rest = NULL;
    Route *route = (Route *)args[0];
    int refused;
    Py_INCREF(route);
    int count = forward(route, batch.sources, batch.n, batch.abs_send_time, batch.ntp, monotonic(), batch.buffer,
                        batch.lengths, &rest, &refused);
    Py_DECREF(route);
    if (count >= 0)
        result = Py_BuildValue("(iNO)", count, rest ? rest : Py_NewRef(Py_None), refused ? Py_True : Py_False);
    close_batch(&batch);
    return result;
}

enum { FAN_PYTHON = 0, FAN_REST = 1, FAN_REFUSED = 2, FAN_FAILED = 3 };

/* fan_out(routes, packets, abs_send_time, ntp) -> None, or a list of (index, what, rest) for the routes
 * Python must act on: FAN_PYTHON (not sent: not armed or not ready, Python's push decides), FAN_REST
 * (sent; `rest` did not fit the socket now and must go through the transport, in order), FAN_REFUSED
 * (the same, and the kernel refused GSO: say so), FAN_FAILED (`rest` is the exception: a ConnectionError when
 * libsrtp refused, then nothing was sent on it; anything else is a bug). */
static PyObject *fastpath_fan_out(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "fan_out(routes, packets, abs_send_time, ntp)");
        return NULL;
    }
    PyObject *routes = args[0];
    Batch batch;
    if (open_batch(args[1], args[2], args[3], &batch) < 0) return NULL;
    PyObject *todo = NULL, *result = NULL;
    double now = monotonic();
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(routes); i++) {  /* re-read: Python code may run per route */
        PyObject *item = PyList_GET_ITEM(routes, i);
        if (!PyObject_TypeCheck(item, &RouteType)) {
            PyErr_SetString(PyExc_TypeError, "fan_out(): routes must be Route objects");
            goto done;
        }
        Route *route = (Route *)item;
        Py_INCREF(route);
        int what = -1, refused = 0;
        PyObject *rest = NULL;
        if (!ready(route)) {
            what = FAN_PYTHON;
        } else if (forward(route, batch.sources, batch.n, batch.abs_send_time, batch.ntp, now, batch.buffer,
                           batch.lengths, &rest, &refused) < 0) {
            /* This route's error goes back with it (libsrtp refused: ConnectionError; anything else is a bug
             * for Python to log): the other routes still send, and what they leave to Python is not lost. */
            PyObject *type, *value, *traceback;
            PyErr_Fetch(&type, &value, &traceback);
            PyErr_NormalizeException(&type, &value, &traceback);
            if (value != NULL && traceback != NULL) PyException_SetTraceback(value, traceback);
            Py_XDECREF(type);
            Py_XDECREF(traceback);
            rest = value ? value : Py_NewRef(Py_None);
            what = FAN_FAILED;
        } else if (refused || rest) {
            what = refused ? FAN_REFUSED : FAN_REST;
        }
        Py_DECREF(route);
        if (what < 0) continue;
        if (todo == NULL && (todo = PyList_New(0)) == NULL) {
            Py_XDECREF(rest);
            goto done;
        }
        PyObject *entry = Py_BuildValue("(niN)", i, what, rest ? rest : Py_NewRef(Py_None));
        if (entry == NULL || PyList_Append(todo, entry) < 0) {
            Py_XDECREF(entry);
            goto done;
        }
        Py_DECREF(entry);
    }
    result = todo ? todo : Py_NewRef(Py_None);
    todo = NULL;
done:
    Py_XDECREF(todo);
    close_batch(&batch);
    return result;
}

/* The receive side (parse_rtp), defined in its own section at the end of this file. */
static PyObject *fastpath_parse_rtp(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
static int receive_init(PyObject *m);

static PyMethodDef methods[] = {
    {"send", (PyCFunction)(void (*)(void))fastpath_send, METH_FASTCALL,
     "send(route, packets, abs_send_time, ntp) -> (datagrams, rest, gso_refused)"},
    {"fan_out", (PyCFunction)(void (*)(void))fastpath_fan_out, METH_FASTCALL,
     "fan_out(routes, packets, abs_send_time, ntp) -> None or [(index, what, rest)]"},
    {"parse_rtp", (PyCFunction)(void (*)(void))fastpath_parse_rtp, METH_FASTCALL,
     "parse_rtp(data, abs_send_time_id, vp8) -> ReceivedRtp, or None where aiortc's receiver would not take it"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpath",
    "The per-packet part of rtc_internals.RtpOut.send in compiled code (see fastpath.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&RouteType) < 0 || PyType_Ready(&RingType) < 0) return NULL;
    s_sequence_number = PyUnicode_InternFromString("sequence_number");
    s_timestamp = PyUnicode_InternFromString("timestamp");
    s_marker = PyUnicode_InternFromString("marker");
    s_payload = PyUnicode_InternFromString("payload");
    /* aiortc 1.16's private names (rtc_internals.PINNED; tests/media/test_aiortc_internals.py checks them) */
    s_transport = PyUnicode_InternFromString("_RTCRtpSender__transport");
    s_enabled = PyUnicode_InternFromString("_enabled");
    s_state = PyUnicode_InternFromString("_state");
    s_ntp_timestamp = PyUnicode_InternFromString("_RTCRtpSender__ntp_timestamp");
    s_rtp_timestamp = PyUnicode_InternFromString("_RTCRtpSender__rtp_timestamp");
    s_octet_count = PyUnicode_InternFromString("_RTCRtpSender__octet_count");
    s_packet_count = PyUnicode_InternFromString("_RTCRtpSender__packet_count");
    s_tx_bytes = PyUnicode_InternFromString("_RTCDtlsTransport__tx_bytes");
    s_tx_packets = PyUnicode_InternFromString("_RTCDtlsTransport__tx_packets");
    s_get_write_buffer_size = PyUnicode_InternFromString("get_write_buffer_size");
    s_is_closing = PyUnicode_InternFromString("is_closing");
    one = PyLong_FromLong(1);
    if (!s_sequence_number || !s_timestamp || !s_marker || !s_payload || !s_transport || !s_enabled || !s_state ||
        !s_ntp_timestamp || !s_rtp_timestamp || !s_octet_count || !s_packet_count || !s_tx_bytes || !s_tx_packets ||
        !s_get_write_buffer_size || !s_is_closing || !one)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&RouteType);
    if (PyModule_AddObject(m, "Route", (PyObject *)&RouteType) < 0) {
        Py_DECREF(&RouteType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Ring", (PyObject *)&RingType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "MAX_PLAIN", MAX_PLAIN) < 0 || PyModule_AddIntConstant(m, "WINDOW", WINDOW) < 0 || PyModule_AddIntConstant(m, "HISTORY", HISTORY) < 0 ||
        PyModule_AddIntConstant(m, "FAN_PYTHON", FAN_PYTHON) < 0 || PyModule_AddIntConstant(m, "FAN_REST", FAN_REST) < 0 ||
        PyModule_AddIntConstant(m, "FAN_REFUSED", FAN_REFUSED) < 0 ||
        PyModule_AddIntConstant(m, "FAN_FAILED", FAN_FAILED) < 0) {
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
