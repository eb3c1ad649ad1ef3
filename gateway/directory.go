package gateway

import (
	"encoding/json"
	"errors"
	"time"

	"tether/storage"
)

// directory is what sessions ask of apps and users (session.Directory).
type directory struct{ g *Gateway }

func (d directory) AppExists(app string) bool {
	_, ok := d.g.apps.get(app)
	return ok
}

func (d directory) SaltedCredentials(app, user, mechanism string) ([]byte, []byte, int, error) {
	rec, err := d.g.users.get(app, user)
	if err != nil {
		return nil, nil, 0, err
	}
	k := rec.SHA256
	switch mechanism {
	case "SCRAM-SHA-256":
	case "SCRAM-SHA-1":
		k = rec.SHA1
	default:
		return nil, nil, 0, errors.New("gateway: unknown mechanism")
	}
	return k.Salt, k.Salted, k.Iterations, nil
}

func (d directory) CheckPassword(app, user, password string) bool {
	rec, err := d.g.users.get(app, user)
	if err != nil {
		// Spend the same work as a real check, so timing does not tell
		// whether the user exists.
		dummy.checkPassword(password)
		return false
	}
	return rec.checkPassword(password)
}

var dummy = newUserRecord("not a password", time.Time{})

func (d directory) ClientConfig(app string) json.RawMessage {
	if rec, ok := d.g.apps.get(app); ok {
		return rec.ClientConfig
	}
	return nil
}

func (d directory) PushAllowed(app, provider, token string) bool {
	_, err := d.g.db.GetInvalidToken(app, storage.Hash(provider+":"+token))
	return errors.Is(err, storage.ErrNotFound)
}
