package service

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

func TestNewEventID(t *testing.T) {
	t.Parallel()
	at := time.UnixMilli(1_790_000_000_123)
	seen := make(map[string]bool)
	for range 1000 {
		id := NewEventID(at)
		if len(id) != 16 {
			t.Fatalf("length %d", len(id))
		}
		if ms := binary.BigEndian.Uint64(append([]byte{0, 0}, id[:6]...)); ms != uint64(at.UnixMilli()) {
			t.Fatalf("time prefix %d, want %d", ms, at.UnixMilli())
		}
		if id[6]>>4 != 7 || id[8]>>6 != 0b10 {
			t.Fatalf("%x is not a UUIDv7", id)
		}
		if seen[string(id)] {
			t.Fatalf("%x twice", id)
		}
		seen[string(id)] = true
	}
	// Later events sort after earlier ones, so inserts go to the index's end.
	if a, b := NewEventID(at), NewEventID(at.Add(time.Millisecond)); bytes.Compare(a, b) >= 0 {
		t.Fatalf("%x does not sort before %x", a, b)
	}
}
