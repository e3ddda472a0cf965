package proto

// The byte-level vectors of issue 13 (public facts about the boards) and a
// few more built by the same rules. Tests and fuzz seeds share them.

type kerongCmdVector struct {
	name  string
	cmd   KerongCommand
	bytes []byte
}

var kerongCmdVectors = []kerongCmdVector{
	{"unlock board 0 lock 1", KerongCommand{Cmd: KerongUnlock, Board: 0, Lock: 1}, []byte{0x02, 0x00, 0x31, 0x03, 0x36}},
	{"unlock board 1 lock 1", KerongCommand{Cmd: KerongUnlock, Board: 1, Lock: 1}, []byte{0x02, 0x10, 0x31, 0x03, 0x46}},
	{"status board 0", KerongCommand{Cmd: KerongStatusBoard, Board: 0, Lock: 1}, []byte{0x02, 0x00, 0x32, 0x03, 0x37}},
	{"unlock board 2 lock 16", KerongCommand{Cmd: KerongUnlock, Board: 2, Lock: 16}, []byte{0x02, 0x2f, 0x31, 0x03, 0x65}},
	{"status one board 15 lock 3", KerongCommand{Cmd: KerongStatusOne, Board: 15, Lock: 3}, []byte{0x02, 0xf2, 0x30, 0x03, 0x27}},
}

type kerongStatusVector struct {
	name   string
	status KerongStatus
	bytes  []byte
}

var kerongStatusVectors = []kerongStatusVector{
	{"board 0 all clear", KerongStatus{Board: 0}, []byte{0x02, 0x00, 0x35, 0x00, 0x00, 0x00, 0x00, 0x03, 0x3a}},
	{"board 1 lock 1 and 16, IR 2", KerongStatus{Board: 1, Locks: 0x8001, IR: 0x0002},
		[]byte{0x02, 0x10, 0x35, 0x01, 0x80, 0x02, 0x00, 0x03, 0xcd}},
}

type cmd8A80Vector struct {
	name  string
	cmd   Command8A80
	bytes []byte
}

var cmd8A80Vectors = []cmd8A80Vector{
	{"unlock 1/1", Command8A80{Head: Head8A80Unlock, Addr: 1, Channel: 1}, []byte{0x8a, 0x01, 0x01, 0x11, 0x9b}},
	{"unlock all", Command8A80{Head: Head8A80Unlock, Addr: 1, Channel: 0}, []byte{0x8a, 0x01, 0x00, 0x11, 0x9a}},
	{"query all", Command8A80{Head: Head8A80Query, Addr: 1}, []byte{0x80, 0x01, 0x00, 0x33, 0xb2}},
	{"unlock 5/24", Command8A80{Head: Head8A80Unlock, Addr: 5, Channel: 24}, []byte{0x8a, 0x05, 0x18, 0x11, 0x86}},
}

type status8A80Vector struct {
	name   string
	status Status8A80
	bytes  []byte
}

var status8A80Vectors = []status8A80Vector{
	{"8-channel board all closed", Status8A80{Addr: 1, Groups: 3}, []byte{0x80, 0x01, 0x00, 0x00, 0x00, 0x33, 0xb2}},
	{"24 channels, 1 and 24 open", Status8A80{Addr: 2, Groups: 3, Bits: 0x800001},
		[]byte{0x80, 0x02, 0x80, 0x00, 0x01, 0x33, 0x30}},
	{"32 channels, 25 open", Status8A80{Addr: 3, Groups: 4, Bits: 0x01000000},
		[]byte{0x80, 0x03, 0x01, 0x00, 0x00, 0x00, 0x33, 0xb1}},
}

type unlockReply8A80Vector struct {
	name  string
	reply UnlockReply8A80
	bytes []byte
}

var unlockReply8A80Vectors = []unlockReply8A80Vector{
	{"1/1 open", UnlockReply8A80{Addr: 1, Channel: 1, Open: true}, []byte{0x8a, 0x01, 0x01, 0x11, 0x9b}},
	{"1/1 closed", UnlockReply8A80{Addr: 1, Channel: 1, Open: false}, []byte{0x8a, 0x01, 0x01, 0x00, 0x8a}},
}
