package stack

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A stack whose supervisor died without stopping its children: the next one finds
// them in the PID file and stops them; a recorded PID now running another program
// is left alone.
func TestStopLeftoverStopsWhatAStackLeft(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "stack.pids")
	s := &Stack{LogDir: dir, PIDFile: pidFile}
	p, err := s.Start("sleeper", "sleep", []string{"300"})
	require.NoError(t, err)
	// Our own PID under another program's name: a reused PID.
	f, err := os.OpenFile(pidFile, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	fmt.Fprintf(f, "%d /usr/bin/not-ours\n", os.Getpid())
	require.NoError(t, f.Close())

	stopped, err := StopLeftover(pidFile, 5*time.Second)
	require.NoError(t, err)
	require.Len(t, stopped, 1)
	select {
	case <-p.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("the left-over process still runs")
	}
	_, err = os.Stat(pidFile)
	require.ErrorIs(t, err, os.ErrNotExist)

	stopped, err = StopLeftover(pidFile, time.Second)
	require.NoError(t, err)
	require.Empty(t, stopped, "nothing left the second time")
}
