package node

import (
	"slices"
	"testing"

	"github.com/hce-sync/hce/api/testkit"
)

// TestUsersSkipsWipedUsers: Users lists users with data; a wiped user
// keeps only its counters and is left out.
func TestUsersSkipsWipedUsers(t *testing.T) {
	s := openTest(t, t.TempDir(), newFakeClock(), 0)
	for _, u := range []string{"a", "b", "c", "d"} {
		mustPut(t, s, u, "c", testkit.WBO("r", u))
	}
	if err := s.WipeUser(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.WipeUser(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	got, err := s.Users(ctx, "", 0)
	if err != nil || !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("Users = %v %v", got, err)
	}
	if got, _ := s.Users(ctx, "a", 1); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("Users after a = %v", got)
	}
	// A user that writes again has data again.
	mustPut(t, s, "b", "c", testkit.WBO("r", "again"))
	if got, _ := s.Users(ctx, "", 0); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("Users = %v", got)
	}
}
