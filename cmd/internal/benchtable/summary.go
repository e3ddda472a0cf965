package main

import (
	"cmp"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// printSummary prints the figures of issue 12 side by side, measured in
// this run: years of service (the soak at year 0, 1 and the end), the
// storage writes of a parcel, and the fleet. soak and wear are the
// metrics of BenchmarkSoak and BenchmarkWear (nil: not run; their status
// says why); fleet is the fleet benchmark's summary.
func printSummary(out io.Writer, soak map[string]float64, soakStatus string, wear map[string]float64, wearStatus string,
	fleet fleetResult, fleetStatus string) {
	fmt.Fprintln(out)
	fmt.Fprintln(out, "years of service, wear and fleet, side by side (this run)")
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "figure\tvalue")
	fmt.Fprintln(w, "------\t-----")
	row := func(figure, value string) { fmt.Fprintf(w, "%s\t%s\n", figure, value) }
	soakStatus, wearStatus = cmp.Or(soakStatus, "not run"), cmp.Or(wearStatus, "not run")

	if soak == nil {
		row("soak", soakStatus)
	} else {
		end := fmt.Sprintf("%g", soak["years"])
		years := func(metric string, f func(float64) string) string {
			var parts []string
			for _, p := range []string{"y0", "y1", "yN"} {
				v, ok := soak[p+"-"+metric]
				if !ok {
					parts = append(parts, "—")
					continue
				}
				parts = append(parts, f(v))
			}
			return strings.Join(parts, " / ")
		}
		ms := func(v float64) string { return fmt.Sprintf("%.2f ms", v) }
		us := func(v float64) string { return format(v, "µs") }
		mb := func(v float64) string { return fmt.Sprintf("%.2f MB", v) }
		at := "year 0 (day 7) / 1 / " + end
		row("soak, database on disk, "+at, years("db-MB", mb))
		row("soak, process RSS, "+at, years("rss-MB", mb))
		row("soak, keypad '#' to coil p50, "+at, years("k2c-p50-µs", us))
		row("soak, keypad '#' to coil p99, "+at, years("k2c-p99-µs", us))
		row("soak, cold start to Ready, "+at, years("cold-ms", ms))
		row("soak, daily snapshot apply, "+at, years("snapshot-ms", ms))
	}

	if wear == nil {
		row("wear", wearStatus)
	} else {
		row("wear, storage writes per parcel cycle (deposit + pickup)", format(wear["cycle-B"], "B"))
		row("wear, ratio to 6 FULL one-page commits (4 KiB pages / the store's 2 KiB)",
			fmt.Sprintf("%.2f / %.2f (target ≤ 2)", wear["ratio"], wear["pageratio"]))
		row("wear, log volume per parcel cycle (Info, JSON)", format(wear["log-B"], "B"))
	}

	if fleet == nil || fleet["title"] == "" {
		row("fleet", fleetStatus)
	} else {
		row("fleet", fleet["title"])
		for _, l := range fleetLabels {
			if v, ok := fleet[l]; ok {
				row("fleet, "+l, v)
			}
		}
		if fleetStatus != "" {
			row("fleet, status", fleetStatus)
		}
	}
	w.Flush()
}
