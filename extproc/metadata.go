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
// therefore writes the Struct's wire form itself, sized first and then
// written in one pass into one buffer, and attaches it to the answer as the
// bytes of ProcessingResponse.dynamic_metadata (field 8), carried as an
// unknown field that proto.Marshal emits verbatim. Envoy, or any reader,
// decodes it as the ordinary field; TestMetadataWireForm holds the encoding
// to structpb's.

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

// maxMetadataFields is the most fields one answer carries (the decision
// has 8, 10 with a shadow match; the usage at most 10: status, the tier reported, five token
// counts, and cost, currency and price_tier).
const maxMetadataFields = 12

// metadataField is one field of tiergate's namespace: a string, or a number
// when isNum.
type metadataField struct {
	key   string
	str   string
	num   float64
	isNum bool
}

// valueSize is the size of the field's google.protobuf.Value.
func (f *metadataField) valueSize() int {
	if f.isNum {
		return protowire.SizeTag(fieldValueNumber) + protowire.SizeFixed64()
	}
	return protowire.SizeTag(fieldValueString) + protowire.SizeBytes(len(f.str))
}

// entrySize is the size of the field's map entry (key and Value).
func (f *metadataField) entrySize() int {
	return protowire.SizeTag(fieldEntryKey) + protowire.SizeBytes(len(f.key)) +
		protowire.SizeTag(fieldEntryValue) + protowire.SizeBytes(f.valueSize())
}

// metadataFields accumulates the fields of tiergate's namespace, without
// allocating: they are written out once, by appendTo.
type metadataFields struct {
	f [maxMetadataFields]metadataField
	n int
}

// str adds a string field.
func (m *metadataFields) str(key, value string) {
	m.f[m.n] = metadataField{key: key, str: value}
	m.n++
}

// num adds a number field.
func (m *metadataFields) num(key string, value float64) {
	m.f[m.n] = metadataField{key: key, num: value, isNum: true}
	m.n++
}

// sizes are the lengths of the nested messages appendTo writes: the inner
// Struct's fields, the Value holding it, the outer map entry, the outer
// Struct.
func (m *metadataFields) sizes() (fields, inner, entry, outer int) {
	for i := range m.f[:m.n] {
		fields += protowire.SizeTag(fieldStructFields) + protowire.SizeBytes(m.f[i].entrySize())
	}
	inner = protowire.SizeTag(fieldValueStruct) + protowire.SizeBytes(fields) // Value{struct_value}
	entry = protowire.SizeTag(fieldEntryKey) + protowire.SizeBytes(len(metadataNamespace)) +
		protowire.SizeTag(fieldEntryValue) + protowire.SizeBytes(inner)
	outer = protowire.SizeTag(fieldStructFields) + protowire.SizeBytes(entry) // the outer Struct
	return fields, inner, entry, outer
}

// size is the length of what appendTo writes.
func (m *metadataFields) size() int {
	_, _, _, outer := m.sizes()
	return protowire.SizeTag(fieldResponseDynamicMetadata) + protowire.SizeBytes(outer)
}

// appendTo appends ProcessingResponse.dynamic_metadata = Struct{"tiergate":
// Value{struct_value: Struct{fields...}}} in wire form to dst.
func (m *metadataFields) appendTo(dst []byte) []byte {
	fields, inner, entry, outer := m.sizes()

	dst = protowire.AppendTag(dst, fieldResponseDynamicMetadata, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(outer))
	dst = protowire.AppendTag(dst, fieldStructFields, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(entry))
	dst = protowire.AppendTag(dst, fieldEntryKey, protowire.BytesType)
	dst = protowire.AppendString(dst, metadataNamespace)
	dst = protowire.AppendTag(dst, fieldEntryValue, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(inner))
	dst = protowire.AppendTag(dst, fieldValueStruct, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(fields))
	for i := range m.f[:m.n] {
		f := &m.f[i]
		dst = protowire.AppendTag(dst, fieldStructFields, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(f.entrySize()))
		dst = protowire.AppendTag(dst, fieldEntryKey, protowire.BytesType)
		dst = protowire.AppendString(dst, f.key)
		dst = protowire.AppendTag(dst, fieldEntryValue, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(f.valueSize()))
		if f.isNum {
			dst = protowire.AppendTag(dst, fieldValueNumber, protowire.Fixed64Type)
			dst = protowire.AppendFixed64(dst, math.Float64bits(f.num))
		} else {
			dst = protowire.AppendTag(dst, fieldValueString, protowire.BytesType)
			dst = protowire.AppendString(dst, f.str)
		}
	}
	return dst
}

// attach sets the fields, as namespace tiergate, as resp's dynamic
// metadata. One attachment per answer: a second would replace the
// namespace (map entries with the same key replace each other on
// decoding). Envoy merges the namespaces of successive answers itself.
func (m *metadataFields) attach(resp *extprocv3.ProcessingResponse) {
	resp.ProtoReflect().SetUnknown(m.appendTo(make([]byte, 0, m.size())))
}
