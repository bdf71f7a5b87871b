// Where the signed-in identity is kept: this browser's IndexedDB (database `zero-console`),
// never the node. The signing key is stored as a non-extractable CryptoKey (IndexedDB keeps
// CryptoKey objects as they are), so it can sign but cannot be read back as bytes; the chain
// is kept as its text. Signing out deletes the record.
const DB = 'zero-console'
const STORE = 'identity'
const ID = 'current'

function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1)
    req.onupgradeneeded = () => req.result.createObjectStore(STORE)
    req.onsuccess = () => resolve(req.result)
    req.onerror = () => reject(req.error)
  })
}

async function tx(mode, f) {
  const db = await open()
  try {
    return await new Promise((resolve, reject) => {
      const t = db.transaction(STORE, mode)
      const req = f(t.objectStore(STORE))
      t.oncomplete = () => resolve(req.result)
      t.onerror = () => reject(t.error)
    })
  } finally {
    db.close()
  }
}

/** Keeps `{key, did, chainText}`. */
export function save(identity) {
  return tx('readwrite', (s) => s.put(identity, ID))
}

/** The kept identity, or undefined. */
export function load() {
  return tx('readonly', (s) => s.get(ID))
}

/** Forgets the identity. */
export function clear() {
  return tx('readwrite', (s) => s.delete(ID))
}
