//! The stock worker program: every task of [`loky_worker::diagnostics`].

fn main() {
    loky_worker::serve(loky_worker::diagnostics::registry())
}
