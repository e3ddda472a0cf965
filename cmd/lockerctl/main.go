// Command lockerctl is the technician's tool: it makes central key pairs,
// signs and publishes grants (put, revoke, transfer, snapshot) and commands
// to a locker (the simulator's development key by default), printing the
// locker's answer, and shows what a locker publishes.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

const usage = `lockerctl: the technician's tool

  lockerctl keygen [-id KEY_ID] [-out FILE]       make a central key pair
  lockerctl grant put [flags]                     sign and publish a grant (deposit, pickup, reclaim, service)
  lockerctl grant revoke -id GRANT_ID [flags]     sign and publish a revoke
  lockerctl grant transfer -id GRANT_ID -holder PHONE -code CODE [flags]
                                                  hand a grant to another person (same id, higher version)
  lockerctl grant snapshot -file OPS.json [flags] send the complete set of grants (others are revoked)
  lockerctl watch [-locker ID] [-count N] [-for D] print what the locker publishes, one line each
  lockerctl command -action open|disable|enable -compartment N [flags]
  lockerctl code-hash -locker ID -code CODE       print the code_hash of a code
  lockerctl status | compartments | outbox        ask a running locker (-sim URL or -socket PATH)
  lockerctl selftest [-all]                       release each empty compartment's lock and check its door
  lockerctl open N -code -                        open compartment N with a service code (read from standard input)
  lockerctl traces [-follow]                      the last traces, and with -follow the new ones as they come
  lockerctl config check FILE                     check a lockerd config (and its wiring) or a wiring file

Common flags: -broker tcp://127.0.0.1:1883 -locker SIM01 -key var/central-dev.json -wait 10s
Broker access: -ca FILE -cert FILE -cert-key FILE (ssl://), -user NAME -password-file FILE
Run 'lockerctl COMMAND -h' for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "keygen":
		err = keygen(args)
	case "grant":
		if len(args) == 0 {
			err = fmt.Errorf("grant: want put, revoke, transfer or snapshot")
			break
		}
		switch args[0] {
		case "put":
			err = grantPut(args[1:])
		case "revoke":
			err = grantRevoke(args[1:])
		case "transfer":
			err = grantTransfer(args[1:])
		case "snapshot":
			err = grantSnapshot(args[1:])
		default:
			err = fmt.Errorf("grant %s: want put, revoke, transfer or snapshot", args[0])
		}
	case "watch":
		err = watch(args)
	case "command":
		err = command(args)
	case "code-hash":
		err = codeHash(args)
	case "status", "compartments", "outbox", "selftest", "open", "traces":
		err = local(os.Args[1], args)
	case "config":
		err = configCheck(args)
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		err = fmt.Errorf("unknown command %q\n\n%s", os.Args[1], usage)
	}
	if errors.Is(err, flag.ErrHelp) {
		return // the flag package printed the command's flags
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "lockerctl: %v\n", err)
		os.Exit(1)
	}
}
