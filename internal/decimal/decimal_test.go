package decimal

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		in     string
		places int
		want   uint64
		err    bool
	}{
		{"a whole number is scaled up", "5", 6, 5_000_000, false},
		{"a price with two decimals is exact", "1.25", 6, 1_250_000, false},
		{"six decimals are the most a price may have", "0.000001", 6, 1, false},
		{"a seventh decimal is refused", "0.0000001", 6, 0, true},
		{"trailing zeros past the scale are harmless", "0.10000000", 6, 100_000, false},
		{"an exponent is read exactly", "1.5e-3", 6, 1_500, false},
		{"a positive exponent is read exactly", "2E+2", 6, 200_000_000, false},
		{"zero is zero", "0", 12, 0, false},
		{"a cost with twelve decimals is exact", "0.000012345678", 12, 12_345_678, false},
		{"a negative number is refused", "-1", 6, 0, true},
		{"a leading zero is not JSON", "01", 6, 0, true},
		{"text is refused", "1.2.3", 6, 0, true},
		{"a dot without digits is refused", "1.", 6, 0, true},
		{"a value past 64 bits is refused", "18446744073709551616", 0, 0, true},
		{"the largest uint64 is read", "18446744073709551615", 0, 18446744073709551615, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse(c.in, c.places)
			if (err != nil) != c.err {
				t.Fatalf("Parse(%q, %d) error = %v, want error %v", c.in, c.places, err, c.err)
			}
			if got != c.want {
				t.Errorf("Parse(%q, %d) = %d, want %d", c.in, c.places, got, c.want)
			}
		})
	}
}

func TestParseRangeError(t *testing.T) {
	t.Parallel()
	if _, err := Parse("99999999999999999999999", 0); !errors.Is(err, ErrRange) {
		t.Errorf("error = %v, want ErrRange", err)
	}
}

func TestAppend(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		v      uint64
		places int
		want   string
	}{
		{"zero is written 0", 0, 12, "0"},
		{"a whole amount has no point", 2 * Pico, 12, "2"},
		{"trailing zeros are trimmed", 1_234_500_000, 12, "0.0012345"},
		{"the last unit is kept", 1, 12, "0.000000000001"},
		{"whole and fraction together", 12_500_000_000_001, 12, "12.500000000001"},
		{"micro units", 1_250_000, 6, "1.25"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := String(c.v, c.places); got != c.want {
				t.Errorf("String(%d, %d) = %q, want %q", c.v, c.places, got, c.want)
			}
			back, err := Parse(c.want, c.places)
			if err != nil || back != c.v {
				t.Errorf("Parse(%q) = %d, %v; want %d (a round trip)", c.want, back, err, c.v)
			}
		})
	}
}

// TestAppendAllocatesNothing: the usage log writes every cost with Append,
// into a buffer it reuses.
func TestAppendAllocatesNothing(t *testing.T) {
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() { buf = Append(buf[:0], 1_234_500_000, 12) }); n != 0 {
		t.Errorf("%.0f allocations per Append, want 0", n)
	}
}
