import CJetStream
import Testing

@testable import Contrail

/// The committed protoc-c code for Protos/jetstream.proto, exercised from Swift on hand-written wire bytes.
@Suite("JetStream proto")
struct ProtoTests {
    @Test func decodeRequestSkipsLegacyFields() throws {
        var w = ProtoWireWriter()
        w.stringField(1, "legacy session cache")  // session_cache (jetstream-http v0.2.2)
        w.varintField(3, 2)                      // priority
        w.int32Field(4, 200)                      // max_tokens
        var text = ProtoWireWriter()
        text.stringField(1, "What is the capital of France?")
        w.bytesField(5, text.bytes)               // text_content
        w.int32Field(8, 1)                        // num_samples
        w.boolField(10, true)                     // has_bos
        let bytes = w.bytes
        let msg = try #require(bytes.withUnsafeBufferPointer {
            jetstream_proto__decode_request__unpack(nil, $0.count, $0.baseAddress)
        })
        defer { jetstream_proto__decode_request__free_unpacked(msg, nil) }
        #expect(msg.pointee.max_tokens == 200)
        #expect(msg.pointee.content_case == JETSTREAM_PROTO__DECODE_REQUEST__CONTENT_TEXT_CONTENT)
        #expect(String(cString: msg.pointee.text_content.pointee.text) == "What is the capital of France?")
        #expect(msg.pointee.num_samples == 1 && msg.pointee.has_bos != 0)
    }

    @Test func tokenContentAndResponseEncoding() throws {
        var ids = ProtoWireWriter()
        ids.key(1, 2)  // packed repeated int32
        var packed = ProtoWireWriter()
        for id in [1, 2, 300] { packed.varint(UInt64(id)) }
        ids.varint(UInt64(packed.bytes.count))
        ids.bytes += packed.bytes
        var w = ProtoWireWriter()
        w.bytesField(6, ids.bytes)
        let msg = try #require(w.bytes.withUnsafeBufferPointer { jetstream_proto__decode_request__unpack(nil, $0.count, $0.baseAddress) })
        defer { jetstream_proto__decode_request__free_unpacked(msg, nil) }
        let tc = msg.pointee.token_content.pointee
        #expect(Array(UnsafeBufferPointer(start: tc.token_ids, count: tc.n_token_ids)) == [1, 2, 300])

        // HealthCheckResponse{is_live: true} is 08 01 on the wire.
        var health = JetstreamProto__HealthCheckResponse()
        jetstream_proto__health_check_response__init(&health)
        health.is_live = 1
        var out = [UInt8](repeating: 0, count: jetstream_proto__health_check_response__get_packed_size(&health))
        _ = jetstream_proto__health_check_response__pack(&health, &out)
        #expect(out == [0x08, 0x01])
    }

    @Test func malformedBytesAreRejected() {
        let junk: [UInt8] = [0x22, 0xFF, 0xFF]  // field 4 length-delimited with an absurd length
        let msg = junk.withUnsafeBufferPointer { jetstream_proto__decode_request__unpack(nil, $0.count, $0.baseAddress) }
        #expect(msg == nil)
    }
}
