package azstore

import (
	"context"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/remediator/remediator/internal/runs"
)

// Queue is the work queue the worker function is triggered by. Messages
// are base64 JSON, the encoding the queue trigger expects by default, and
// never expire.
type Queue struct {
	client *azqueue.QueueClient
	store  *Store
}

var _ runs.Queue = (*Queue)(nil)

// Send implements runs.Queue.
func (q *Queue) Send(ctx context.Context, m runs.Message, after time.Duration) error {
	if err := q.store.check(); err != nil {
		return err
	}
	text, err := m.Encode()
	if err != nil {
		return err
	}
	// Work never expires (the default is 7 days): a chunk waiting behind
	// a long run must not vanish with its devices.
	forever := int32(-1)
	opts := &azqueue.EnqueueMessageOptions{TimeToLive: &forever}
	if after > 0 {
		v := int32(min(after, 7*24*time.Hour-time.Minute) / time.Second)
		opts.VisibilityTimeout = &v
	}
	q.store.ops.Add(1)
	_, err = q.client.EnqueueMessage(ctx, text, opts)
	return err
}
