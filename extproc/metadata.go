package extproc

import (
	"math"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/encoding/protowire"
)

// metadataNamespace is tiergate's dynamic metadata namespace; Envoy keeps
// it only when the filter's metadata_options.receiving_namespaces lists it.
const metadataNamespace = "tiergate"

// Dynamic metadata is a google.protobuf.Struct, whose map protobuf-go
// encodes by reflection: building and encoding it took more CPU than the
// policy's whole decision on a 2 KiB body (BENCHMARKS.md). tiergate
// therefore writes the Struct's wire form itself and attaches it to the
// answer as the bytes of ProcessingResponse.dynamic_metadata (field 8),
// carried as an unknown field that proto.Marshal emits verbatim. Envoy, or
// any reader, decodes it as the ordinary field; TestMetadataWireForm holds
// the encoding to structpb's.

// Field numbers of google.protobuf.Struct, its map entries and Value.
const (
	fieldResponseDynamicMetadata = 8 // envoy.service.ext_proc.v3.ProcessingResponse
	fieldStructFields            = 1
	fieldEntryKey                = 1
	fieldEntryValue              = 2
	fieldValueNumber             = 2
	fieldValueString             = 3
	fieldValueStruct             = 5
)

// metadataFields accumulates the fields of tiergate's namespace.
type metadataFields struct {
	b []byte
}

func (m *metadataFields) entry(key string, value []byte) {
	n := protowire.SizeTag(fieldEntryKey) + protowire.SizeBytes(len(key)) +
		protowire.SizeTag(fieldEntryValue) + protowire.SizeBytes(len(value))
	m.b = protowire.AppendTag(m.b, fieldStructFields, protowire.BytesType)
	m.b = protowire.AppendVarint(m.b, uint64(n))
	m.b = protowire.AppendTag(m.b, fieldEntryKey, protowire.BytesType)
	m.b = protowire.AppendString(m.b, key)
	m.b = protowire.AppendTag(m.b, fieldEntryValue, protowire.BytesType)
	m.b = protowire.AppendBytes(m.b, value)
}

// str adds a string field.
func (m *metadataFields) str(key, value string) {
	var v [64]byte
	val := protowire.AppendTag(v[:0], fieldValueString, protowire.BytesType)
	val = protowire.AppendString(val, value)
	m.entry(key, val)
}

// num adds a number field.
func (m *metadataFields) num(key string, value float64) {
	var v [16]byte
	val := protowire.AppendTag(v[:0], fieldValueNumber, protowire.Fixed64Type)
	val = protowire.AppendFixed64(val, math.Float64bits(value))
	m.entry(key, val)
}

// attach sets the fields, as namespace tiergate, as resp's dynamic metadata.
func (m *metadataFields) attach(resp *extprocv3.ProcessingResponse) {
	// Value{struct_value: Struct{fields...}}
	inner := protowire.AppendTag(make([]byte, 0, len(m.b)+8), fieldValueStruct, protowire.BytesType)
	inner = protowire.AppendBytes(inner, m.b)
	// Struct{fields: {"tiergate": inner}}
	outer := metadataFields{b: make([]byte, 0, len(inner)+24)}
	outer.entry(metadataNamespace, inner)
	// One attachment per answer: a second would replace the namespace (map
	// entries with the same key replace each other on decoding). Envoy
	// merges the namespaces of successive answers itself.
	raw := protowire.AppendTag(make([]byte, 0, len(outer.b)+8), fieldResponseDynamicMetadata, protowire.BytesType)
	raw = protowire.AppendBytes(raw, outer.b)
	resp.ProtoReflect().SetUnknown(raw)
}
