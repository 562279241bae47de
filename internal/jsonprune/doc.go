// Package jsonprune reads a JSON document of any size as it streams past,
// in chunks cut anywhere, and keeps a pruned copy of it: the members at a
// few given paths and nothing else. A reader that looks only at those
// paths finds in the copy what it would find in the whole document, in
// memory bounded by the caller rather than by the document (package usage
// reads the token usage of responses that run to tens of megabytes this
// way).
//
// Kept members stay in document order, duplicates included, because
// readers disagree on which duplicate wins and the copy must not decide
// for them. The document is validated as gjson.Valid validates (RFC 8259,
// string bytes not checked for UTF-8), so that a caller can refuse a
// document exactly when its gjson reader would.
//
// It knows nothing of what the kept values mean.
package jsonprune
