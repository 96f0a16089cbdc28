//! Generated protobuf and gRPC code. Package paths mirror the `.proto` packages so that the
//! cross-package references prost generates resolve.
#![allow(clippy::all, missing_docs)]

pub mod github {
    pub mod com {
        pub mod argoproj {
            pub mod argo_cd {
                pub mod v3 {
                    pub mod pkg {
                        pub mod apis {
                            pub mod application {
                                pub mod v1alpha1 {
                                    include!(concat!(
                                        env!("OUT_DIR"),
                                        "/github.com.argoproj.argo_cd.v3.pkg.apis.application.v1alpha1.rs"
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub mod k8s {
    pub mod io {
        pub mod apimachinery {
            pub mod pkg {
                pub mod apis {
                    pub mod meta {
                        pub mod v1 {
                            include!(concat!(env!("OUT_DIR"), "/k8s.io.apimachinery.pkg.apis.meta.v1.rs"));
                        }
                    }
                }
            }
        }
    }
}

pub mod cluster {
    include!(concat!(env!("OUT_DIR"), "/cluster.rs"));
}

pub mod account {
    include!(concat!(env!("OUT_DIR"), "/account.rs"));
}

pub mod session {
    include!(concat!(env!("OUT_DIR"), "/session.rs"));
}

pub mod version {
    include!(concat!(env!("OUT_DIR"), "/version.rs"));
}

/// The encoded `FileDescriptorSet` of the public API (`cluster`, `account`, `session`, `version`
/// and the messages they use, with their imports and comments).
pub const PUBLIC_FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/public_descriptor_set.bin"));

pub mod corral {
    pub mod auth {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/corral.auth.v1.rs"));
        }
    }
    pub mod events {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/corral.events.v1.rs"));
        }
    }
    pub mod registry {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/corral.registry.v1.rs"));
        }
    }
    pub mod watch {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/corral.watch.v1.rs"));
        }
    }
}

pub use corral::auth::v1 as auth;
pub use corral::events::v1 as events;
pub use corral::registry::v1 as registry;
pub use corral::watch::v1 as watch;
pub use github::com::argoproj::argo_cd::v3::pkg::apis::application::v1alpha1;
pub use k8s::io::apimachinery::pkg::apis::meta::v1 as meta;
