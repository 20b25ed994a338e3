//! Issuing and looking up scoped key pairs (see `domain::credentials`). Lookups are cached:
//! agents sign a call every few hundred milliseconds.

use crate::domain::credentials::{Holder, ScopedKey, WriteGrant};
use crate::error::ControlError;
use crate::now_secs;
use crate::store::credentials::CredentialStore;
use std::collections::HashMap;
use std::sync::RwLock;

pub struct Credentials {
    store: CredentialStore,
    cache: RwLock<HashMap<String, ScopedKey>>,
}

fn random_56() -> [u8; 56] {
    let mut out = [0u8; 56];
    for chunk in out.chunks_mut(16) {
        let n = chunk.len();
        chunk.copy_from_slice(&uuid::Uuid::new_v4().into_bytes()[..n]);
    }
    out
}

impl Credentials {
    pub(crate) fn new(store: CredentialStore) -> Self {
        Credentials {
            store,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// A new key pair for `holder`, stored before it is handed out.
    pub fn issue(
        &self,
        holder: Holder,
        writes: Vec<WriteGrant>,
    ) -> Result<ScopedKey, ControlError> {
        let key = ScopedKey::new(holder, writes, &random_56(), now_secs());
        self.store.insert(&key)?;
        Ok(key)
    }

    /// The scoped key of `access_key`, if one was issued.
    pub fn get(&self, access_key: &str) -> Result<Option<ScopedKey>, ControlError> {
        if let Some(k) = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(access_key)
        {
            return Ok(Some(k.clone()));
        }
        let found = self.store.get(access_key)?;
        if let Some(k) = &found {
            self.cache
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(access_key.to_string(), k.clone());
        }
        Ok(found)
    }

    /// Forgets the keys of a holder whose work is over and gone (a deleted endpoint's
    /// instances).
    pub fn forget(&self, holder: &Holder) -> Result<(), ControlError> {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, k| &k.holder != holder);
        self.store.delete_holder(holder)
    }
}
