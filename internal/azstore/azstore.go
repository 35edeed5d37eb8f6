// Package azstore keeps asynchronous runs, idempotency keys and device
// cooldowns in Azure Storage: one table (runs, keys and cooldowns in
// separate partitions) and one queue of work for the worker function, in
// the storage account of AzureWebJobsStorage — by connection string, or by
// identity (AzureWebJobsStorage__accountName) the way the Functions host
// itself connects.
package azstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
)

// Config says where the storage is.
type Config struct {
	// ConnectionString is AzureWebJobsStorage ("UseDevelopmentStorage=true"
	// is Azurite on its default ports).
	ConnectionString string
	// AccountName is AzureWebJobsStorage__accountName, used with
	// Credential when there is no connection string; TableServiceURI and
	// QueueServiceURI (AzureWebJobsStorage__tableServiceUri, __queueServiceUri)
	// override the public-cloud endpoints it implies.
	AccountName, TableServiceURI, QueueServiceURI string
	Credential                                    azcore.TokenCredential
	// Table and Queue name the run table and the work queue.
	Table, Queue string
}

// devStorage is what "UseDevelopmentStorage=true" stands for.
const devStorage = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;" +
	"AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
	"QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"

// Open connects to the table and the queue, creating them (and the
// queue's poison queue) when missing.
func Open(ctx context.Context, cfg Config) (*Store, *Queue, error) {
	st, q, err := New(cfg)
	if err != nil {
		return nil, nil, err
	}
	if err := st.Ensure(ctx); err != nil {
		return nil, nil, err
	}
	return st, q, nil
}

// New builds the clients without a network call: a configuration error
// is an error, storage that cannot be reached is not (yet). Ensure
// creates the table and queues.
func New(cfg Config) (*Store, *Queue, error) {
	table, queue, poison, err := clients(cfg)
	if err != nil {
		return nil, nil, err
	}
	st := &Store{table: table, tableName: cfg.Table, queues: []*azqueue.QueueClient{queue, poison}}
	return st, &Queue{client: queue, store: st}, nil
}

// Ensure creates the table and the queues if they do not exist.
func (s *Store) Ensure(ctx context.Context) error {
	if _, err := s.table.CreateTable(ctx, nil); err != nil && !hasCode(err, http.StatusConflict) {
		return fmt.Errorf("azstore: creating table %s: %w", s.tableName, err)
	}
	for _, q := range s.queues {
		if _, err := q.Create(ctx, nil); err != nil && !hasCode(err, http.StatusConflict) {
			return fmt.Errorf("azstore: creating queue %s: %w", q.URL(), err)
		}
	}
	s.ready.Store(true)
	return nil
}

func clients(cfg Config) (table *aztables.Client, queue, poison *azqueue.QueueClient, err error) {
	if cfg.Table == "" || cfg.Queue == "" {
		return nil, nil, nil, errors.New("azstore: table and queue names are required")
	}
	cs := cfg.ConnectionString
	if strings.EqualFold(strings.TrimSpace(strings.TrimSuffix(cs, ";")), "UseDevelopmentStorage=true") {
		cs = devStorage
	}
	if cs != "" {
		svc, err := aztables.NewServiceClientFromConnectionString(cs, nil)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("azstore: AzureWebJobsStorage is not a usable connection string: %w", redact(err))
		}
		qs, err := azqueue.NewServiceClientFromConnectionString(cs, nil)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("azstore: AzureWebJobsStorage is not a usable connection string: %w", redact(err))
		}
		return svc.NewClient(cfg.Table), qs.NewQueueClient(cfg.Queue), qs.NewQueueClient(cfg.Queue + "-poison"), nil
	}
	if cfg.AccountName == "" || cfg.Credential == nil {
		return nil, nil, nil, errors.New("azstore: no storage: set AzureWebJobsStorage, or AzureWebJobsStorage__accountName with a managed identity")
	}
	tURI, qURI := cfg.TableServiceURI, cfg.QueueServiceURI
	if tURI == "" {
		tURI = "https://" + cfg.AccountName + ".table.core.windows.net"
	}
	if qURI == "" {
		qURI = "https://" + cfg.AccountName + ".queue.core.windows.net"
	}
	svc, err := aztables.NewServiceClient(tURI, cfg.Credential, nil)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("azstore: table service %s: %w", tURI, err)
	}
	qs, err := azqueue.NewServiceClient(qURI, cfg.Credential, nil)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("azstore: queue service %s: %w", qURI, err)
	}
	return svc.NewClient(cfg.Table), qs.NewQueueClient(cfg.Queue), qs.NewQueueClient(cfg.Queue + "-poison"), nil
}

// redact keeps an account key out of an error message.
func redact(err error) error {
	msg := err.Error()
	if i := strings.Index(strings.ToLower(msg), "accountkey="); i >= 0 {
		msg = msg[:i] + "AccountKey=[redacted]"
	}
	return errors.New(msg)
}

func hasCode(err error, status int) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == status
}
