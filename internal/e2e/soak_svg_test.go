package e2e

import (
	"fmt"
	"html"
	"math"
	"strings"

	"github.com/tiergate/tiergate/internal/envoyrig"
)

func envoyVersionLabel() string { return envoyrig.PinnedVersion() }

// soakSVG draws the samples as three stacked panels (resident memory, heap
// in use, goroutines) against minutes of load, by hand: no plotting
// dependency for one picture.
func soakSVG(samples []soakSample, title string) []byte {
	const (
		width, panelH, left, right, top, gap = 930, 170, 70, 50, 50, 45
	)
	panels := []struct {
		name, unit string
		value      func(soakSample) float64
		scale      float64
		color      string
	}{
		{"resident memory (process_resident_memory_bytes)", "MiB", func(s soakSample) float64 { return s.rss }, 1 << 20, "#1f77b4"},
		{"Go heap (go_memstats_heap_alloc_bytes)", "MiB", func(s soakSample) float64 { return s.heap }, 1 << 20, "#2ca02c"},
		{"goroutines (go_goroutines)", "", func(s soakSample) float64 { return s.goroutines }, 1, "#d62728"},
	}
	height := top + len(panels)*(panelH+gap) + 10
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	var end float64
	if n := len(samples); n > 0 {
		end = samples[n-1].at.Minutes()
	}
	end = math.Max(end, 1.0/60)
	plotW := float64(width - left - right)
	for i, p := range panels {
		y0 := float64(top + i*(panelH+gap))
		hi := 0.0
		for _, s := range samples {
			hi = math.Max(hi, p.value(s)/p.scale)
		}
		hi = niceCeil(hi * 1.1)
		fmt.Fprintf(&b, `<text x="%d" y="%.0f">%s</text>`+"\n", left, y0-6, html.EscapeString(p.name))
		fmt.Fprintf(&b, `<rect x="%d" y="%.0f" width="%.0f" height="%d" fill="none" stroke="#999"/>`+"\n", left, y0, plotW, panelH)
		for k := 0; k <= 4; k++ { // y grid
			v := hi * float64(k) / 4
			y := y0 + float64(panelH) - float64(panelH)*float64(k)/4
			fmt.Fprintf(&b, `<line x1="%d" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#eee"/>`, left, float64(left)+plotW, y, y)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y+4, strings.TrimSpace(fmt.Sprintf("%.4g %s", v, p.unit)))
		}
		for k := 0; k <= 6; k++ { // x ticks
			m := end * float64(k) / 6
			x := float64(left) + plotW*float64(k)/6
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%.1f min</text>`+"\n", x, y0+float64(panelH)+14, m)
		}
		var pts strings.Builder
		for _, s := range samples {
			x := float64(left) + plotW*s.at.Minutes()/end
			y := y0 + float64(panelH) - float64(panelH)*(p.value(s)/p.scale)/hi
			fmt.Fprintf(&pts, "%.1f,%.1f ", x, y)
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.2" points="%s"/>`+"\n", p.color, strings.TrimSpace(pts.String()))
	}
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
