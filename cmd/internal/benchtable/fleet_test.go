package main

import (
	"strings"
	"testing"
)

// The fleet's summary is read by its labels; a line that continues a
// label is joined to it, and the report before the summary is not read.
func TestParseFleet(t *testing.T) {
	out := `fleet: all 3000 lockers connected 29.0 s after the start
  failed      3× deposit: no door opened within 5 s

fleet benchmark: 3000 lockers (FLEET0001…FLEET3000), broker Mosquitto, 2 cores
  lockers          3000
  connected        3000 (all 3000 within 29.0 s of the start)
  parcels          201 deposited, 2 picked up, 0 failed in 20s of traffic (a parcel every 5m0s per locker)
  RSS per locker   0.70 MB (2106.35 MB in all)
  idle CPU         9.2 % of one core over 20 s with no traffic (30.8 µs/s per locker); the broker 0.3 %
  reconnect curve  broker down 5.8 s; after its return: 0.5s 9.3%, 45s 100.0%
                   p50 3.0 s, p90 7.7 s, last 41.1 s; 3000 of 3000 lost the broker, 0 still down
`
	r := parseFleet(strings.NewReader(out))
	want := map[string]string{
		"title":           "3000 lockers (FLEET0001…FLEET3000), broker Mosquitto, 2 cores",
		"lockers":         "3000",
		"connected":       "3000 (all 3000 within 29.0 s of the start)",
		"parcels":         "201 deposited, 2 picked up, 0 failed in 20s of traffic (a parcel every 5m0s per locker)",
		"RSS per locker":  "0.70 MB (2106.35 MB in all)",
		"idle CPU":        "9.2 % of one core over 20 s with no traffic (30.8 µs/s per locker); the broker 0.3 %",
		"reconnect curve": "broker down 5.8 s; after its return: 0.5s 9.3%, 45s 100.0%; p50 3.0 s, p90 7.7 s, last 41.1 s; 3000 of 3000 lost the broker, 0 still down",
	}
	if len(r) != len(want) {
		t.Errorf("read %d labels, want %d: %q", len(r), len(want), r)
	}
	for k, v := range want {
		if r[k] != v {
			t.Errorf("%s = %q, want %q", k, r[k], v)
		}
	}
}
