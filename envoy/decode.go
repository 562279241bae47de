package envoy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"sigs.k8s.io/yaml"
)

// decodeBootstrap turns YAML into a Bootstrap the way Envoy reads it: unknown
// fields, unknown enum values and unresolvable Any type URLs are errors.
//
// protojson alone would reject the same documents, but its errors point at a
// column of the intermediate JSON. So the JSON tree is first checked against
// the message descriptors, which yields errors that name the place in the
// file's own terms (static_resources.listeners[0].per_connection_buffer_limit_bytes);
// protojson then does the decoding and catches what the walk leaves to it
// (scalar values of the wrong JSON type, out-of-range numbers).
func decodeBootstrap(yamlBytes []byte) (*bootstrapv3.Bootstrap, error) {
	jsonBytes, err := yaml.YAMLToJSON(yamlBytes)
	if err != nil {
		return nil, err // "yaml: line 12: ..."
	}
	var tree any
	dec := json.NewDecoder(bytes.NewReader(jsonBytes))
	dec.UseNumber()
	if err := dec.Decode(&tree); err != nil {
		return nil, fmt.Errorf("yaml converted to invalid JSON: %w", err)
	}
	if _, ok := tree.(map[string]any); !ok {
		return nil, errors.New("not an Envoy bootstrap: the document is not a mapping")
	}
	bs := &bootstrapv3.Bootstrap{}
	if errs := checkMessage(bs.ProtoReflect().Descriptor(), tree, ""); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	opts := protojson.UnmarshalOptions{DiscardUnknown: false, Resolver: protoregistry.GlobalTypes}
	if err := opts.Unmarshal(jsonBytes, bs); err != nil {
		return nil, err
	}
	return bs, nil
}

// checkMessage checks a JSON value against message descriptor md and returns
// one error per problem, each prefixed with its path.
func checkMessage(md protoreflect.MessageDescriptor, v any, path string) []error {
	if v == nil {
		return nil // null: the field is unset
	}
	switch md.FullName() {
	case "google.protobuf.Any":
		return checkAny(v, path)
	case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue":
		return nil // free-form JSON
	}
	if scalarWellKnown[md.FullName()] {
		// Duration, Timestamp, FieldMask, wrappers, Empty: a JSON scalar (or {})
		// whose syntax protojson knows; ask it, on this value alone.
		return checkWithProtojson(md, v, path)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return []error{fmt.Errorf("%s: want a mapping for %s, got %s", orRoot(path), md.FullName(), jsonKind(v))}
	}
	var errs []error
	fields := md.Fields()
	for _, key := range slices.Sorted(maps.Keys(obj)) {
		fd := fields.ByJSONName(key)
		if fd == nil {
			fd = fields.ByTextName(key)
		}
		p := joinPath(path, key)
		if fd == nil {
			errs = append(errs, fmt.Errorf("%s: unknown field in %s", p, md.FullName()))
			continue
		}
		errs = append(errs, checkField(fd, obj[key], p)...)
	}
	return errs
}

func checkField(fd protoreflect.FieldDescriptor, v any, path string) []error {
	if v == nil {
		return nil
	}
	switch {
	case fd.IsMap():
		obj, ok := v.(map[string]any)
		if !ok {
			return []error{fmt.Errorf("%s: want a mapping, got %s", path, jsonKind(v))}
		}
		var errs []error
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			errs = append(errs, checkSingular(fd.MapValue(), obj[k], path+"["+k+"]")...)
		}
		return errs
	case fd.IsList():
		list, ok := v.([]any)
		if !ok {
			return []error{fmt.Errorf("%s: want a list, got %s", path, jsonKind(v))}
		}
		var errs []error
		for i, elem := range list {
			errs = append(errs, checkSingular(fd, elem, path+"["+strconv.Itoa(i)+"]")...)
		}
		return errs
	default:
		return checkSingular(fd, v, path)
	}
}

func checkSingular(fd protoreflect.FieldDescriptor, v any, path string) []error {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return checkMessage(fd.Message(), v, path)
	case protoreflect.EnumKind:
		if err := checkEnum(fd.Enum(), v, path); err != nil {
			return []error{err}
		}
	}
	return nil // other scalars: left to protojson
}

func checkEnum(ed protoreflect.EnumDescriptor, v any, path string) error {
	if ed.FullName() == "google.protobuf.NullValue" {
		return nil
	}
	switch v := v.(type) {
	case json.Number:
		return nil // numeric enum values are accepted, as Envoy accepts them
	case string:
		if ed.Values().ByName(protoreflect.Name(v)) != nil {
			return nil
		}
		values := ed.Values()
		names := make([]string, values.Len())
		for i := range values.Len() {
			names[i] = string(values.Get(i).Name())
		}
		return fmt.Errorf("%s: unknown value %q for %s (want one of %s)", path, v, ed.FullName(), strings.Join(names, ", "))
	default:
		return fmt.Errorf("%s: want an enum name of %s, got %s", path, ed.FullName(), jsonKind(v))
	}
}

// checkAny resolves the "@type" of an Any and checks the rest of the mapping
// against the message it names.
func checkAny(v any, path string) []error {
	obj, ok := v.(map[string]any)
	if !ok {
		return []error{fmt.Errorf("%s: want a mapping with \"@type\" for google.protobuf.Any, got %s", orRoot(path), jsonKind(v))}
	}
	url, ok := obj["@type"].(string)
	if !ok || url == "" {
		return []error{fmt.Errorf("%s: google.protobuf.Any without \"@type\"", orRoot(path))}
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	if err != nil {
		return []error{fmt.Errorf("%s: unknown type %q (not an Envoy API type, or not registered in types.go)", orRoot(path), url)}
	}
	inner := mt.Descriptor()
	rest := make(map[string]any, len(obj))
	for k, val := range obj {
		if k != "@type" {
			rest[k] = val
		}
	}
	if isWellKnown(inner) {
		// A well-known type in an Any carries its JSON form under "value".
		var errs []error
		for _, k := range slices.Sorted(maps.Keys(rest)) {
			if k != "value" {
				errs = append(errs, fmt.Errorf("%s: unknown field in google.protobuf.Any of %s", joinPath(path, k), inner.FullName()))
			}
		}
		return append(errs, checkMessage(inner, rest["value"], joinPath(path, "value"))...)
	}
	return checkMessage(inner, rest, path)
}

// checkWithProtojson decodes a lone well-known-type value with protojson.
func checkWithProtojson(md protoreflect.MessageDescriptor, v any, path string) []error {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
	if err != nil {
		return nil // unregistered: leave it to the full decode
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return []error{fmt.Errorf("%s: %w", path, err)}
	}
	if err := protojson.Unmarshal(raw, mt.New().Interface()); err != nil {
		return []error{fmt.Errorf("%s: invalid %s value %s", path, md.FullName(), raw)}
	}
	return nil
}

// scalarWellKnown lists the google.protobuf types whose JSON form is a scalar
// (or {} for Empty) with its own syntax. Any, Struct, Value and ListValue are
// handled before this is consulted.
var scalarWellKnown = map[protoreflect.FullName]bool{
	"google.protobuf.Duration":    true,
	"google.protobuf.Timestamp":   true,
	"google.protobuf.FieldMask":   true,
	"google.protobuf.Empty":       true,
	"google.protobuf.DoubleValue": true,
	"google.protobuf.FloatValue":  true,
	"google.protobuf.Int64Value":  true,
	"google.protobuf.UInt64Value": true,
	"google.protobuf.Int32Value":  true,
	"google.protobuf.UInt32Value": true,
	"google.protobuf.BoolValue":   true,
	"google.protobuf.StringValue": true,
	"google.protobuf.BytesValue":  true,
}

// isWellKnown reports whether md has a special JSON form inside an Any (its
// JSON goes under "value").
func isWellKnown(md protoreflect.MessageDescriptor) bool {
	switch md.FullName() {
	case "google.protobuf.Any", "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue":
		return true
	}
	return scalarWellKnown[md.FullName()]
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func orRoot(path string) string {
	if path == "" {
		return "(document)"
	}
	return path
}

func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	default:
		return "null"
	}
}
