// Package jsonscan validates a JSON document in one pass while recording
// the members of its top-level object as offsets into it, for a caller
// that judges and rewrites a body byte by byte (package policy). Every
// member of a kind the caller reads is recorded, duplicates included,
// because JSON readers disagree on which duplicate wins; the rest are
// recorded as runs, so what a scan holds is bounded by the keys read, not
// by the body.
//
// It never allocates a value tree and never copies the document; it does
// not decide anything about what the members hold.
package jsonscan
