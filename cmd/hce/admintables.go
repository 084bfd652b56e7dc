package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hce-sync/hce/directory"
)

// The tables hce admin prints (without --json).

// table writes rows under a header, columns aligned.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// orDash shows an empty cell as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func renderDone(msg string) func(io.Writer, []byte) error {
	return func(w io.Writer, _ []byte) error {
		fmt.Fprintln(w, msg)
		return nil
	}
}

func renderStatus(w io.Writer, body []byte) error {
	var s directory.Status
	if err := json.Unmarshal(body, &s); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	fmt.Fprintf(w, "answered by %s (%s); leader %s %s\n", s.ID, s.State, orDash(s.Leader.ID), s.Leader.URL)
	fmt.Fprintf(w, "applied index %d, %d users, %d storage nodes, R=%d\n\n", s.AppliedIndex, s.Users, s.Nodes, s.Settings.Replicas)
	var rows [][]string
	for _, v := range s.Voters {
		lead := ""
		if v.ID == s.Leader.ID {
			lead = "leader"
		}
		rows = append(rows, []string{v.ID, lead, v.Suffrage, v.RaftAddr, orDash(v.URL)})
	}
	table(w, []string{"VOTER", "ROLE", "SUFFRAGE", "RAFT", "URL"}, rows)
	return nil
}

func renderVoters(w io.Writer, body []byte) error {
	var v directory.VotersView
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("voters: %w", err)
	}
	var rows [][]string
	for _, x := range v.Voters {
		lead, rec := "", "yes"
		if x.Leader {
			lead = "leader"
		}
		if !x.Recorded {
			rec = "no"
		}
		rows = append(rows, []string{x.ID, lead, x.Suffrage, x.RaftAddr, orDash(x.URL), rec})
	}
	table(w, []string{"VOTER", "ROLE", "SUFFRAGE", "RAFT", "URL", "RECORDED"}, rows)
	if len(v.Stale) > 0 {
		fmt.Fprintf(w, "\nrecords of removed voters still kept (until every voter decodes RemoveVoter): %s\n", strings.Join(v.Stale, ", "))
	}
	return nil
}

func renderNodes(w io.Writer, body []byte) error {
	var v directory.NodesView
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("nodes: %w", err)
	}
	var rows [][]string
	for _, n := range v.Nodes {
		beat := "-"
		if n.Heartbeat != nil {
			beat = (time.Duration(n.Heartbeat.AgeMS) * time.Millisecond).Round(100 * time.Millisecond).String()
		}
		state := n.State
		if n.Waiting > 0 {
			state += fmt.Sprintf(" (%d users wait)", n.Waiting)
		}
		rows = append(rows, []string{n.ID, orDash(n.Operator), state, fmt.Sprint(n.Load), fmt.Sprint(n.Leaving),
			fmt.Sprint(n.EffectiveCapacity), beat, n.URL})
	}
	table(w, []string{"NODE", "OPERATOR", "STATE", "USERS", "HANDOFFS", "CAPACITY", "HEARTBEAT", "URL"}, rows)
	fmt.Fprintf(w, "\nanswered by %s, leader %s, %d transfers under way (heartbeats as that voter saw them)\n",
		v.Voter, orDash(v.Leader), v.Transfers)
	return nil
}

func renderUser(w io.Writer, body []byte) error {
	var v directory.UserView
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("user: %w", err)
	}
	state := func(m directory.MemberView, leaving bool) string {
		var s []string
		switch {
		case leaving:
			s = append(s, "owes a handoff")
		case m.Filling:
			s = append(s, fmt.Sprintf("filling (epoch %d)", m.Epoch))
		default:
			s = append(s, "current")
		}
		if m.Down {
			s = append(s, "down")
		}
		if m.Leave {
			s = append(s, "moving away")
		}
		return strings.Join(s, ", ")
	}
	rows := [][]string{{"primary", orDash(v.Primary.ID), state(v.Primary, false), v.Primary.URL}}
	for _, m := range v.Replicas {
		rows = append(rows, []string{"replica", m.ID, state(m, false), m.URL})
	}
	for _, m := range v.Leaving {
		rows = append(rows, []string{"leaving", m.ID, state(m, true), m.URL})
	}
	fmt.Fprintf(w, "user %s\n", v.User)
	table(w, []string{"ROLE", "NODE", "STATE", "URL"}, rows)
	if v.Waiting {
		fmt.Fprintln(w, "\nwaiting: no current member is up; node/weave answers 503 until one is")
	}
	return nil
}

func renderSettings(w io.Writer, body []byte) error {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var rows [][]string
	for _, k := range keys {
		rows = append(rows, []string{k, fmt.Sprint(m[k])})
	}
	table(w, []string{"SETTING", "VALUE"}, rows)
	return nil
}

func renderInvite(w io.Writer, body []byte) error {
	var v directory.InviteView
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("invite: %w", err)
	}
	fmt.Fprintf(w, "invite code %s (single use, valid until %s)\n", v.Code, time.Unix(v.Expires, 0).UTC().Format(time.RFC3339))
	return nil
}

func renderInvites(w io.Writer, body []byte) error {
	var v struct {
		Invites []directory.InviteView `json:"invites"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("invites: %w", err)
	}
	var rows [][]string
	for _, i := range v.Invites {
		rows = append(rows, []string{i.Hash, time.Unix(i.Expires, 0).UTC().Format(time.RFC3339)})
	}
	table(w, []string{"HASH", "EXPIRES"}, rows)
	return nil
}
