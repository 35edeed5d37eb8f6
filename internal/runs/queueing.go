package runs

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// queueMore puts the run's next chunks on the queue while fewer than
// QueuedChunks of its unfinished chunks are there, each by queueChunk:
// marked first, sent by the worker whose mark was written.
func (s *Service) queueMore(ctx context.Context, run string) error {
	chunks, err := s.store.Chunks(ctx, run)
	if err != nil {
		return err
	}
	if len(chunks) > 0 && chunks[0].Wave > 0 {
		var open bool
		if chunks, open, err = s.waveChunks(ctx, run, chunks); err != nil || !open {
			return err
		}
	}
	active := 0
	for _, c := range chunks {
		if c.Queued && c.Open > 0 {
			active++
		}
	}
	for i := range chunks {
		c := &chunks[i]
		if active >= s.opts.QueuedChunks {
			return nil
		}
		if c.Queued || c.Open == 0 {
			continue
		}
		queued, err := s.queueChunk(ctx, run, c)
		if err != nil {
			return err
		}
		if queued {
			active++
		}
	}
	return nil
}

// queueChunk queues chunk c unless another worker did: the chunk is marked
// queued first, with its ETag, and only the worker whose mark was written
// sends its message. Two chunks finishing at once both find the next one
// unqueued; without the mark first both sent it, and two invocations
// worked one chunk (one lost its recording, and its devices waited out
// the claim lease). A message that cannot be sent unmarks the chunk.
func (s *Service) queueChunk(ctx context.Context, run string, c *Chunk) (bool, error) {
	for range 3 {
		c.Queued = true
		err := s.store.Save(ctx, run, c, nil)
		if errors.Is(err, ErrConflict) {
			// Changed meanwhile: queued by another worker, or changed
			// otherwise (then it is still to queue).
			now, gerr := s.store.Chunk(ctx, run, c.Number)
			if gerr != nil {
				return false, gerr
			}
			if *c = now; c.Queued || c.Open == 0 {
				return c.Queued && c.Open > 0, nil
			}
			continue
		}
		if err != nil {
			return false, err
		}
		msg, err := s.messageOf(ctx, run, c)
		if err == nil && len(msg.Items) > 0 {
			err = s.queue.Send(ctx, msg, 0)
		}
		if err != nil {
			c.Queued = false
			_ = s.store.Save(ctx, run, c, nil) // so that the next worker to finish a chunk queues it
			return false, fmt.Errorf("runs: queueing chunk %d of run %s: %w", c.Number, run, err)
		}
		return true, nil
	}
	return false, fmt.Errorf("runs: chunk %d of run %s stayed contended", c.Number, run)
}

// messageOf is the work of chunk c: its devices still to do.
func (s *Service) messageOf(ctx context.Context, run string, c *Chunk) (Message, error) {
	msg := Message{RunID: run, Chunk: c.Number}
	if len(c.Items) == 0 {
		return msg, nil
	}
	lo, hi := slices.Min(c.Items), slices.Max(c.Items)
	rows, err := s.store.Rows(ctx, run, lo, hi+1)
	if err != nil {
		return msg, err
	}
	want := map[int]bool{}
	for _, i := range c.Items {
		want[i] = true
	}
	for _, r := range rows {
		if want[r.Index] && !r.final() {
			msg.Items = append(msg.Items, WorkItem{Index: r.Index, DeviceID: r.DeviceID, ScriptID: r.ScriptPolicyID, Collection: r.Collection})
		}
	}
	return msg, nil
}
