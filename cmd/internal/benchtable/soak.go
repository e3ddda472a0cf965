package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// soakYears is how many years BenchmarkSoak simulates (-soak-years).
var soakYears = 5.0

// soakBench is the soak: years of service on a fake clock, printed as a
// table of its own (printSoak), one column per point in time.
var soakBench = bench{pkg: "./controller", names: []string{"BenchmarkSoak"}, times: 1, short: 1, timeout: 90 * time.Minute,
	args: func(short bool) []string {
		y := soakYears
		if short {
			y = min(y, 0.2)
		}
		return []string{fmt.Sprintf("-soak-years=%g", y)}
	}}

// soakRows are the soak's figures: the metric after the point's prefix
// (y0-, y1-, yN-), and its printed unit.
var soakRows = []struct {
	figure, metric string
}{
	{"database on disk (file + WAL + shm)", "db-MB"},
	{"  of which the write-ahead log", "wal-MB"},
	{"rows in grants", "grants-rows"},
	{"rows in commands", "commands-rows"},
	{"rows in outbox", "outbox-rows"},
	{"Go heap in use (after GC)", "heap-MB"},
	{"  Go heap live (HeapAlloc)", "live-MB"},
	{"process RSS (after GC, memory returned)", "rss-MB"},
	{"keypad '#' to coil, p50 (last 300 codes)", "k2c-p50-µs"},
	{"keypad '#' to coil, p99 (last 300 codes)", "k2c-p99-µs"},
	{"cold start: reopen store + controller to Ready (median of 3)", "cold-ms"},
	{"daily snapshot apply (median of the last 7)", "snapshot-ms"},
	{"  ops in that snapshot (grants in force)", "snapshot-ops"},
}

// printSoak prints the soak's table: year 0 (after the first week), year
// 1 and the end, the end over year 1, and whether it is within 10 % (and
// the database under its bound).
func printSoak(out io.Writer, m map[string]float64, status string) {
	fmt.Fprintln(out)
	if m == nil {
		fmt.Fprintf(out, "soak (BenchmarkSoak): %s\n", status)
		return
	}
	years := m["years"]
	fmt.Fprintf(out, "soak: %g years at %.0f parcels a day, 124 compartments, on a fake clock; database on a tmpfs (/dev/shm: "+
		"fsyncs excluded, see the wear rows for the disk); %.0f s\n", years, m["parcels/day"], m["wall-s"])
	end := fmt.Sprintf("year %g", years)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "figure\tyear 0 (day 7)\tyear 1\t%s\t%s / year 1\ttarget\tmet\n", end, end)
	fmt.Fprintln(w, "------\t--------------\t------\t"+strings.Repeat("-", len(end))+"\t---------------\t------\t---")
	for _, rw := range soakRows {
		unit := rw.metric[strings.LastIndexByte(rw.metric, '-')+1:]
		cell := func(p string) (string, float64, bool) {
			v, ok := m[p+"-"+rw.metric]
			if !ok {
				return "—", 0, false
			}
			switch {
			case unit == "µs" && v >= 1000:
				return fmt.Sprintf("%.2f ms", v/1000), v, true
			case unit == "rows" || unit == "ops":
				return thousands(int64(v)), v, true
			default:
				return fmt.Sprintf("%.2f %s", v, unit), v, true
			}
		}
		y0, _, _ := cell("y0")
		y1, v1, ok1 := cell("y1")
		yN, vN, okN := cell("yN")
		ratio, target, met := "—", "≤ 1.10× year 1", ""
		if rw.metric == "snapshot-ops" {
			target = "—"
		}
		if ok1 && okN && v1 > 0 {
			r := vN / v1
			ratio = fmt.Sprintf("%.2f", r)
			if target != "—" {
				met = "yes"
				if r > 1.10 {
					met = "NO"
				}
			}
		}
		if rw.metric == "db-MB" {
			bound := m["bound-MB"]
			target += fmt.Sprintf(", < %.1f MB", bound)
			if okN && vN >= bound {
				met = "NO"
			} else if met == "" && okN {
				met = "yes"
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", rw.figure, y0, y1, yN, ratio, target, met)
	}
	w.Flush()
	perRow := "—"
	if g := m["yN-grants-rows"]; g > 0 {
		perRow = fmt.Sprintf("%.0f B", m["yN-db-MB"]*1e6/g)
	}
	fmt.Fprintf(out, "database bound: %.1f MB = %.0f parcels a day × (14 days PurgeAfter + 4 days the longest grant + 1 day) × 2 KiB a parcel "+
		"(two grant rows with their indexes and half-full pages), + a 4 MiB write-ahead log; at the end the file held %s per grant row, all included\n",
		m["bound-MB"], m["parcels/day"], perRow)
}
