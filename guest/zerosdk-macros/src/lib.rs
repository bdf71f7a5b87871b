#![warn(missing_docs)]
//! Attribute macros of `zerosdk`; use them through `zerosdk::zeroproxy::handler` and
//! `zerosdk::zerochrono::handler`, which re-export them.
//!
//! Both keep the function as written and add the component export that calls it, so a crate
//! has at most one of each.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType, Type, parse_macro_input};

/// Makes `fn NAME(req: &mut Request) -> R` (or `async fn`, or without the argument) the app's
/// `wasi:http/incoming-handler` (with the `p3` feature: its `wasi:http/handler@0.3`). `R` implements `zerosdk::zeroproxy::IntoResponse`; the return
/// type `impl Response` is read as the concrete `zerosdk::zeroproxy::Response`.
#[proc_macro_attribute]
pub fn http_handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return error(
            proc_macro2::TokenStream::from(attr).span(),
            "#[zeroproxy::handler] takes no arguments: write `#[zeroproxy::handler]`",
        );
    }
    let mut func = parse_macro_input!(item as ItemFn);
    if let Err(e) = check_signature(&func, "#[zeroproxy::handler]", "req: &mut Request") {
        return e;
    }
    rewrite_impl_response(&mut func);
    let name = &func.sig.ident;
    let call = if func.sig.inputs.is_empty() {
        quote!(#name())
    } else {
        quote!(#name(__zerosdk_req))
    };
    let guest = format_ident!("__ZeroProxyHandler");
    if cfg!(feature = "p3") {
        let call = if func.sig.asyncness.is_some() {
            quote!(#call.await)
        } else {
            call
        };
        return quote! {
            #func

            #[doc(hidden)]
            struct #guest;

            impl ::zerosdk::__private::wasip3::exports::http::handler::Guest for #guest {
                async fn handle(
                    __zerosdk_request: ::zerosdk::__private::wasip3::http::types::Request,
                ) -> ::core::result::Result<
                    ::zerosdk::__private::wasip3::http::types::Response,
                    ::zerosdk::__private::wasip3::http::types::ErrorCode,
                > {
                    ::zerosdk::zeroproxy::__private::serve_p3(
                        __zerosdk_request,
                        async |__zerosdk_req: &mut ::zerosdk::zeroproxy::Request| {
                            ::zerosdk::zeroproxy::IntoResponse::into_response(#call)
                        },
                    )
                    .await
                }
            }

            ::zerosdk::__private::wasip3::http::service::export!(#guest);
        }
        .into();
    }
    let run = if func.sig.asyncness.is_some() {
        quote! {
            ::zerosdk::zeroproxy::__private::serve_async(
                __zerosdk_request,
                __zerosdk_response_out,
                async |__zerosdk_req: &mut ::zerosdk::zeroproxy::Request| {
                    ::zerosdk::zeroproxy::IntoResponse::into_response(#call.await)
                },
            )
        }
    } else {
        quote! {
            ::zerosdk::zeroproxy::__private::serve(
                __zerosdk_request,
                __zerosdk_response_out,
                |__zerosdk_req: &mut ::zerosdk::zeroproxy::Request| {
                    ::zerosdk::zeroproxy::IntoResponse::into_response(#call)
                },
            )
        }
    };
    quote! {
        #func

        #[doc(hidden)]
        struct #guest;

        impl ::zerosdk::__private::wasip2::exports::http::incoming_handler::Guest for #guest {
            fn handle(
                __zerosdk_request: ::zerosdk::__private::wasip2::http::types::IncomingRequest,
                __zerosdk_response_out: ::zerosdk::__private::wasip2::http::types::ResponseOutparam,
            ) {
                #[allow(unused_variables)]
                #run
            }
        }

        ::zerosdk::__private::wasip2::http::proxy::export!(
            #guest with_types_in ::zerosdk::__private::wasip2
        );
    }
    .into()
}

/// Makes `fn NAME(tick: Tick) -> R` (or `async fn`) the app's `zero:chrono/tick-handler`.
/// `R` is `()` or `Result<(), E>` with `E: Display` (an error is logged with the run id and
/// not retried).
#[proc_macro_attribute]
pub fn tick_handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return error(
            proc_macro2::TokenStream::from(attr).span(),
            "#[zerochrono::handler] takes no arguments: write `#[zerochrono::handler]`",
        );
    }
    let func = parse_macro_input!(item as ItemFn);
    if let Err(e) = check_signature(&func, "#[zerochrono::handler]", "tick: Tick") {
        return e;
    }
    let name = &func.sig.ident;
    let call = if func.sig.inputs.is_empty() {
        quote!(#name())
    } else {
        quote!(#name(__zerosdk_tick))
    };
    let run = if func.sig.asyncness.is_some() {
        quote! {
            ::zerosdk::zerochrono::__private::run_async(__zerosdk_tick, async |__zerosdk_tick| {
                ::zerosdk::zerochrono::IntoTickResult::into_tick_result(#call.await)
            })
        }
    } else {
        quote! {
            ::zerosdk::zerochrono::__private::run(__zerosdk_tick, |__zerosdk_tick| {
                ::zerosdk::zerochrono::IntoTickResult::into_tick_result(#call)
            })
        }
    };
    let guest = format_ident!("__ZeroChronoHandler");
    quote! {
        #func

        #[doc(hidden)]
        struct #guest;

        impl ::zerosdk::zerochrono::__private::Guest for #guest {
            fn handle_tick(
                __zerosdk_tick: ::zerosdk::zerochrono::Tick,
            ) -> ::core::result::Result<(), ::std::string::String> {
                #[allow(unused_variables)]
                #run
            }
        }

        ::zerosdk::zerochrono::__private::export!(
            #guest with_types_in ::zerosdk::zerochrono::__private::bindings
        );
    }
    .into()
}

/// Refuses what the generated export cannot call: generics, `self`, more than one argument.
fn check_signature(func: &ItemFn, what: &str, arg: &str) -> Result<(), TokenStream> {
    let sig = &func.sig;
    if !sig.generics.params.is_empty() {
        return Err(error(
            sig.generics.span(),
            &format!("{what} functions cannot be generic"),
        ));
    }
    if sig.inputs.len() > 1 {
        return Err(error(
            sig.inputs.span(),
            &format!("{what} functions take at most one argument (`{arg}`)"),
        ));
    }
    if let Some(FnArg::Receiver(r)) = sig.inputs.first() {
        return Err(error(
            r.span(),
            &format!("{what} must be a free function, not a method"),
        ));
    }
    Ok(())
}

/// `-> impl Response` is not valid Rust for a struct; read it as the concrete type.
fn rewrite_impl_response(func: &mut ItemFn) {
    let ReturnType::Type(_, ty) = &mut func.sig.output else {
        return;
    };
    let Type::ImplTrait(imp) = ty.as_ref() else {
        return;
    };
    // The path as written (`Response`, `zeroproxy::Response`), so that the user's import is
    // what it resolves to.
    let path = match (imp.bounds.len(), imp.bounds.first()) {
        (1, Some(syn::TypeParamBound::Trait(t)))
            if t.path
                .segments
                .last()
                .is_some_and(|s| s.ident == "Response" && s.arguments.is_empty()) =>
        {
            t.path.clone()
        }
        _ => return,
    };
    **ty = Type::Path(syn::TypePath { qself: None, path });
}

fn error(span: Span, message: &str) -> TokenStream {
    syn::Error::new(span, message).to_compile_error().into()
}
