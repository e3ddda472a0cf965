// Command lockerctl is the technician's tool: it makes central key pairs,
// and signs and publishes grants and commands to a locker (the simulator's
// development key by default), printing the locker's answer.
package main

import (
	"fmt"
	"os"
)

const usage = `lockerctl: the technician's tool

  lockerctl keygen [-id KEY_ID] [-out FILE]       make a central key pair
  lockerctl grant put [flags]                     sign and publish a grant (deposit, pickup, reclaim, service)
  lockerctl grant revoke -id GRANT_ID [flags]     sign and publish a revoke
  lockerctl command -action open|disable|enable -compartment N [flags]
  lockerctl code-hash -locker ID -code CODE       print the code_hash of a code
  lockerctl status | compartments | outbox        ask a running locker (-sim URL or -socket PATH)
  lockerctl selftest [-all]                       release each empty compartment's lock and check its door

Common flags: -broker tcp://127.0.0.1:1883 -locker SIM01 -key var/central-dev.json -wait 10s
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
			err = fmt.Errorf("grant: want put or revoke")
			break
		}
		switch args[0] {
		case "put":
			err = grantPut(args[1:])
		case "revoke":
			err = grantRevoke(args[1:])
		default:
			err = fmt.Errorf("grant %s: want put or revoke", args[0])
		}
	case "command":
		err = command(args)
	case "code-hash":
		err = codeHash(args)
	case "status", "compartments", "outbox", "selftest":
		err = local(os.Args[1], args)
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		err = fmt.Errorf("unknown command %q\n\n%s", os.Args[1], usage)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "lockerctl: %v\n", err)
		os.Exit(1)
	}
}
