"""A gRPC peer of another implementation: gRPC's C core (Python's grpcio) with protobuf's Python
runtime, for test/grpc/grpcio.test.ts. It knows no message type in advance: it reads the
descriptors from a svrkit server's gRPC reflection and builds the messages from them, as grpcurl
does.

  grpcio-peer.py client <address>
      Runs the client scenarios against a svrkit server serving probe.Probe and
      streams.v1.Streams at <address>, and prints one JSON object with what each returned.
  grpcio-peer.py server <address>
      Serves probe.Probe/Echo and streams.v1.Streams/{Count,Upload,Echo} on 127.0.0.1 (a free
      port), with the descriptors read from the svrkit server at <address>; prints
      "listening 127.0.0.1:<port>" and serves until stdin closes.

Exit status 0 after a run, 1 on an unexpected error (traceback on stderr).
"""
import json
import sys
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory


# ---- the few protobuf wire helpers the reflection messages need (no generated code for them) ----

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, value):
    """A length-delimited field (wire type 2)."""
    return varint(num << 3 | 2) + varint(len(value)) + value


def fields(buf):
    """Decodes a message: {field number: [value, ...]}, bytes for wire type 2, ints for varints."""
    out = {}
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError('wire type %d' % wt)
        out.setdefault(num, []).append(v)
    return out


def read_varint(buf, i):
    shift = 0
    n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


IDENTITY = dict(request_serializer=None, response_deserializer=None)
REFLECTION = {
    'v1': '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo',
    'v1alpha': '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo',
}


def reflect(channel, version, requests):
    """One ServerReflectionInfo stream: the requests (bytes) in, the responses (bytes) out."""
    call = channel.stream_stream(REFLECTION[version], **IDENTITY)
    return list(call(iter(requests), timeout=10))


def list_services(channel, version):
    # ServerReflectionRequest.list_services = 7; ServerReflectionResponse.list_services_response = 6,
    # whose ListServiceResponse.service = 1, each a ServiceResponse with name = 1.
    [resp] = reflect(channel, version, [field(7, b'*')])
    listing = fields(fields(resp)[6][0])
    return sorted(fields(s)[1][0].decode() for s in listing.get(1, []))


def load_pool(channel, symbols):
    """A descriptor pool with the files that define `symbols` and all they import, from reflection."""
    # ServerReflectionRequest.file_containing_symbol = 4; the response's file_descriptor_response = 4,
    # whose FileDescriptorResponse.file_descriptor_proto = 1 (each file, then the ones it imports).
    files = {}  # name -> (its serialized FileDescriptorProto, the names it imports)
    for resp in reflect(channel, 'v1', [field(4, s.encode()) for s in symbols]):
        f = fields(resp)
        if 7 in f:
            raise RuntimeError('reflection error: %r' % fields(f[7][0]))
        for raw in fields(f[4][0]).get(1, []):
            fdp = descriptor_pb2.FileDescriptorProto.FromString(raw)
            files[fdp.name] = (bytes(raw), list(fdp.dependency))
    pool = descriptor_pool.DescriptorPool()
    added = set()
    while len(added) < len(files):
        ready = [n for n, (_, deps) in files.items() if n not in added and all(d in added for d in deps)]
        if not ready:
            raise RuntimeError('imports missing from reflection: %r' % sorted(set(files) - added))
        for n in ready:
            pool.AddSerializedFile(files[n][0])
            added.add(n)
    return pool


def message_class(pool, name):
    desc = pool.FindMessageTypeByName(name)
    if hasattr(message_factory, 'GetMessageClass'):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


class Types:
    """The messages of probe.Probe and streams.v1.Streams, built from reflected descriptors."""

    def __init__(self, channel):
        pool = load_pool(channel, ['probe.Probe', 'streams.v1.Streams'])
        for attr, name in [
            ('EchoRequest', 'probe.EchoRequest'), ('EchoReply', 'probe.EchoReply'),
            ('CountRequest', 'streams.v1.CountRequest'), ('Item', 'streams.v1.Item'),
            ('Chunk', 'streams.v1.Chunk'), ('UploadSummary', 'streams.v1.UploadSummary'),
        ]:
            setattr(self, attr, message_class(pool, name))


def as_dict(msg):
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


# ---- client mode ----

def run_client(address):
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=10)
    t = Types(channel)
    out = {'services_v1': list_services(channel, 'v1'), 'services_v1alpha': list_services(channel, 'v1alpha')}

    echo = channel.unary_unary('/probe.Probe/Echo', request_serializer=t.EchoRequest.SerializeToString, response_deserializer=t.EchoReply.FromString)
    reply, call = echo.with_call(
        t.EchoRequest(text='from grpcio', set_response_metadata={'x-reply': 'yes'}),
        metadata=[('x-user', 'grace'), ('trace-bin', b'\x00\x01\xfa')], timeout=5)
    out['unary'] = as_dict(reply)
    out['unary_headers'] = dict((k, v) for k, v in call.initial_metadata() if not k.endswith('-bin'))

    try:
        echo(t.EchoRequest(text='f', fail='rpc:NOT_FOUND:no such user: bob 100%'), timeout=5)
        out['error'] = None
    except grpc.RpcError as e:
        out['error'] = {'code': e.code().name, 'details': e.details(), 'trailers': dict(e.trailing_metadata() or [])}

    started = time.monotonic()
    try:
        echo(t.EchoRequest(text='slow', delay_ms=5000), timeout=0.2)
        out['deadline'] = None
    except grpc.RpcError as e:
        out['deadline'] = {'code': e.code().name, 'after_ms': round((time.monotonic() - started) * 1000)}

    count = channel.unary_stream('/streams.v1.Streams/Count', request_serializer=t.CountRequest.SerializeToString, response_deserializer=t.Item.FromString)
    stream = count(t.CountRequest(count=500, payload_bytes=100, trailers={'x-t': '2'}), timeout=10)
    out['count'] = [item.seq for item in stream]
    out['count_trailers'] = dict(stream.trailing_metadata())

    upload = channel.stream_unary('/streams.v1.Streams/Upload', request_serializer=t.Chunk.SerializeToString, response_deserializer=t.UploadSummary.FromString)
    out['upload'] = as_dict(upload(iter([t.Chunk(data=bytes([i % 256]) * 1000) for i in range(200)]), timeout=10))

    bidi = channel.stream_stream('/streams.v1.Streams/Echo', request_serializer=t.Item.SerializeToString, response_deserializer=t.Item.FromString)
    out['bidi'] = [item.seq for item in bidi(iter([t.Item(seq=i) for i in range(100)]), timeout=10)]

    # grpc.health.v1.Health/Check: HealthCheckRequest{service = 1}; HealthCheckResponse{status = 1}, SERVING = 1.
    check = channel.unary_unary('/grpc.health.v1.Health/Check', **IDENTITY)
    out['health'] = fields(check(b'', timeout=5)).get(1, [0])[0]
    try:
        check(field(1, b'no.such.Service'), timeout=5)
        out['health_unknown'] = None
    except grpc.RpcError as e:
        out['health_unknown'] = e.code().name

    channel.close()
    print(json.dumps(out))


# ---- server mode ----

def run_server(address):
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=10)
    t = Types(channel)
    channel.close()

    def echo(request, context):
        md = dict(context.invocation_metadata())
        if request.fail:
            context.set_trailing_metadata([('x-failed', 'yes')])
            context.abort(grpc.StatusCode.NOT_FOUND, request.fail)
        if request.delay_ms:
            # Wakes early when the call ends (its deadline passed, or the client cancelled it).
            ended = threading.Event()
            context.add_callback(ended.set)
            ended.wait(request.delay_ms / 1000)
        left = context.time_remaining()
        return t.EchoReply(text='grpcio: ' + request.text, method='probe.Probe/Echo',
                           metadata={k: v for k, v in md.items() if k.startswith('x-')},
                           deadline_left_ms=-1 if left is None else int(left * 1000))

    def count(request, context):
        for i in range(request.count):
            yield t.Item(seq=i, payload=b'p' * request.payload_bytes)

    def upload(chunks, context):
        n = 0
        total = 0
        for c in chunks:
            n += 1
            total += len(c.data)
        return t.UploadSummary(bytes=total, chunks=n)

    def bidi(items, context):
        for item in items:
            yield item

    def unary(fn, req, res):
        return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=req.FromString, response_serializer=res.SerializeToString)

    handlers = [
        grpc.method_handlers_generic_handler('probe.Probe', {'Echo': unary(echo, t.EchoRequest, t.EchoReply)}),
        grpc.method_handlers_generic_handler('streams.v1.Streams', {
            'Count': grpc.unary_stream_rpc_method_handler(count, request_deserializer=t.CountRequest.FromString, response_serializer=t.Item.SerializeToString),
            'Upload': grpc.stream_unary_rpc_method_handler(upload, request_deserializer=t.Chunk.FromString, response_serializer=t.UploadSummary.SerializeToString),
            'Echo': grpc.stream_stream_rpc_method_handler(bidi, request_deserializer=t.Item.FromString, response_serializer=t.Item.SerializeToString),
        }),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=handlers)
    port = server.add_insecure_port('127.0.0.1:0')
    server.start()
    print('listening 127.0.0.1:%d' % port, flush=True)
    # Serve until the test closes stdin (or dies, which closes it too).
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    done.wait()
    server.stop(grace=0.5).wait()


if __name__ == '__main__':
    if len(sys.argv) != 3 or sys.argv[1] not in ('client', 'server'):
        sys.stderr.write('usage: grpcio-peer.py client|server <svrkit address>\n')
        sys.exit(2)
    (run_client if sys.argv[1] == 'client' else run_server)(sys.argv[2])
