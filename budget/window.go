package budget

import (
	"time"

	"github.com/tiergate/tiergate/policy"
)

// Bounds returns the UTC calendar window of kind w that contains t, as
// [start, end): days start at 00:00 UTC, weeks on Monday, months on the
// first.
//
// Days and weeks are counted in Unix time, which has no leap seconds: a
// UTC day is exactly 86400 of its seconds. That keeps the request path off
// time.Date, which costs more than the rest of a budget's work.
func Bounds(w policy.Window, t time.Time) (start, end time.Time) {
	sec := t.Unix()
	day := sec - mod(sec, secondsPerDay)
	switch w {
	case policy.WindowWeek:
		// 1970-01-01 was a Thursday, three days after a Monday.
		monday := day - mod(day/secondsPerDay+3, 7)*secondsPerDay
		return time.Unix(monday, 0).UTC(), time.Unix(monday+7*secondsPerDay, 0).UTC()
	case policy.WindowMonth:
		y, m, _ := t.UTC().Date()
		start = time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0)
	}
	return time.Unix(day, 0).UTC(), time.Unix(day+secondsPerDay, 0).UTC()
}

const secondsPerDay = 24 * 60 * 60

// mod is the remainder of a by b (b > 0) that is never negative, so times
// before 1970 fall in the right day too.
func mod(a, b int64) int64 {
	r := a % b
	if r < 0 {
		r += b
	}
	return r
}

// secondsUntil is the whole seconds from t to end, rounded up: the
// retry-after that does not invite a retry before the window has ended.
func secondsUntil(t, end time.Time) int64 {
	d := end.Sub(t)
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}
