package controller_test

import (
	"github.com/openlocker/locker/controller"
	"github.com/openlocker/locker/sync/client"
)

// The controller is what the MQTT link drives.
var _ client.Locker = (*controller.Controller)(nil)
