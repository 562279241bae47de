package budget

import (
	"time"

	"github.com/tiergate/tiergate/policy"
)

// Bounds returns the UTC calendar window of kind w that contains t, as
// [start, end): days start at 00:00 UTC, weeks on Monday, months on the
// first.
func Bounds(w policy.Window, t time.Time) (start, end time.Time) {
	t = t.UTC()
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	switch w {
	case policy.WindowWeek:
		// time.Weekday counts from Sunday; weeks here start on Monday.
		back := (int(day.Weekday()) + 6) % 7
		start = day.AddDate(0, 0, -back)
		return start, start.AddDate(0, 0, 7)
	case policy.WindowMonth:
		start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0)
	}
	return day, day.AddDate(0, 0, 1)
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
